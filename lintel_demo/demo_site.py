"""The demo's sample site: a registry file, its photos and a week of entrance video.

Everything comes from photos that installed packages ship (see
:mod:`lintel_demo.videogen`): three registered residents, two people who live there
without being on the register, and two one-off visitors (a guest, a courier).
Each simulated evening is one short clip with a wall-clock start time, so the
edge daemon turns it into sightings on that day; the recurrence rule (3
distinct days in 14) opens a case for each unregistered resident.

Two residents' register photos are poor (their face blended with another, as an
old photo looks to the model), so the door does not recognise them: 姚明's is
still close enough for the server to call his face group a likely resident (no
case; the manager confirms it on the likely-residents page), 王芳's is so far
that her face group becomes a case that names her for a desk check (the case
page shows her registry face beside the door crops).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2

from edge.face.errors import ImageError
from lintel_demo.videogen import GeneratedVideo, WalkIn, make_video, poor_enrolment_photo

SITE_NAME = "Demo Court 示范小区"
SITE_TZ = ZoneInfo("Asia/Shanghai")  # the case rule's default site-local zone


@dataclass(frozen=True, slots=True)
class Resident:
    """A registered occupant: a row in the registry file, with two photos."""

    person: str  # a face in lintel_demo.videogen.PEOPLE
    name: str
    address: str
    role: str
    external_id: str
    likeness: float = 1.0
    """How much the register photo looks like the face at the door (1.0: the same
    photo; lower: blended with another face, see lintel_demo.videogen.poor_enrolment_photo)."""


# Likeness -> cosine of their door face group with the photo (buffalo_s, measured by
# running the demo): 王芳 0.49 -> 0.33 (all 3 door looks vote for her, margin 0.27,
# her second photo 0.29), under the edge's 0.40 and the server's 0.35 for attributing
# an occupant never seen at the door, over the desk-check rule's 0.30: a case that
# names her (0.47 gave 0.25: a case naming nobody; 0.50 made her a likely resident).
# 姚明 0.515 -> 0.38 (0.51 gave 0.35, 0.52 gave 0.39): unknown at the door,
# attributed to him by the server.
RESIDENTS = (
    Resident("t1_p3", "王芳", "3幢1单元502室", "业主", "DEMO-0001", likeness=0.49),
    Resident("yao_ming", "姚明", "3幢2单元1203室", "业主", "DEMO-0002", likeness=0.515),
    Resident("t1_p6", "陈静", "5幢1单元301室", "租户", "DEMO-0003"),
)
DESK_CHECK = ("t1_p3",)  # registered, far from the photo: a case naming her
LIKELY = ("yao_ming",)  # registered, a poor photo: a likely resident, no case
# On the register without a photo (as many real rows are): never matched, never a case.
NO_PHOTO = (
    ("刘洋", "3幢1单元502室", "家属", "DEMO-0004"),
    ("赵磊", "5幢2单元802室", "租户", "DEMO-0005"),
)
UNREGISTERED = ("t1_p2", "t1_p4")  # live here, not on the register: the cases to find
VISITORS = ("t1_p1", "t1_p5")  # a guest and a courier, each seen on one day only

# (days before today, arrival time, who walks in, in order). Two evenings are
# after 22:00, so the unregistered residents also collect night entries.
DAYS: tuple[tuple[int, time, tuple[str, ...]], ...] = (
    (5, time(19, 10), ("t1_p3", "t1_p2", "yao_ming", "t1_p1")),
    (4, time(22, 35), ("t1_p2", "t1_p4", "t1_p6")),
    (3, time(18, 20), ("yao_ming", "t1_p4", "t1_p3")),
    (2, time(23, 5), ("t1_p2", "t1_p5", "t1_p6")),
    (1, time(20, 40), ("t1_p4", "t1_p2", "t1_p3", "yao_ming")),
)

FPS = 25.0
_WALK = 45  # frames a walk-in lasts (1.8 s)
_GAP = 25  # idle frames between walk-ins (1 s): one track per person


@dataclass(frozen=True, slots=True)
class DayClip:
    """One simulated evening: its video and the wall-clock time of its first frame."""

    day: date
    start_at: datetime
    video: GeneratedVideo
    people: tuple[str, ...]


def write_registry(folder: Path) -> tuple[Path, Path]:
    """Write ``registry.csv`` and ``photos/``; returns (file, photo folder)."""
    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in RESIDENTS:
        # Two registry photos per resident, the recommended standard (one still works).
        # The packages ship one picture of each person, so the second is its mirror
        # image (as a phone's front camera takes it): another file, the same face.
        first = poor_enrolment_photo(r.person, r.likeness)
        names = []
        for n, image in enumerate((first, cv2.flip(first, 1)), start=1):
            photo = photos / f"{r.external_id}-{n}.jpg"
            if not cv2.imwrite(str(photo), image):
                raise ImageError(f"cannot write {photo}")
            names.append(photo.name)
        rows.append([r.name, r.address, r.role, "2024-03-01", ";".join(names), r.external_id])
    for name, address, role, ext in NO_PHOTO:
        rows.append([name, address, role, "2024-03-01", "", ext])
    path = folder / "registry.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["姓名", "地址或房号", "身份", "入住日期", "照片", "外部编号"])
        writer.writerows(rows)
    return path, photos


def day_walkins(people: tuple[str, ...]) -> list[WalkIn]:
    """One person at a time, alternating the door's left and right side."""
    left = ((0.25, 0.35), (0.3, 0.5))
    right = ((0.75, 0.35), (0.7, 0.5))
    out = []
    t = 20
    for i, person in enumerate(people):
        out.append(
            WalkIn(person, t, t + _WALK - 1, *(left if i % 2 == 0 else right), mirror=i % 2 == 0)
        )
        t += _WALK + _GAP
    return out


def write_clips(folder: Path, *, today: date | None = None) -> list[DayClip]:
    """One clip per simulated day, the last one yesterday (site-local)."""
    today = today or datetime.now(SITE_TZ).date()
    clips = []
    for days_ago, at, people in DAYS:
        day = today - timedelta(days=days_ago)
        video = make_video(
            folder / f"entrance-{day.isoformat()}.mp4", day_walkins(people), fps=FPS, tail_s=1.0
        )
        start = datetime.combine(day, at, tzinfo=SITE_TZ)
        clips.append(DayClip(day, start, video, people))
    return clips


def _days_seen(person: str) -> int:
    return sum(person in people for _d, _t, people in DAYS)


def expected_cases() -> int:
    """How many people the rule should flag: the unregistered and the desk check, each
    seen on >= 3 days."""
    return sum(1 for p in (*UNREGISTERED, *DESK_CHECK) if _days_seen(p) >= 3)


def expected_likely() -> int:
    """How many face groups the server should label likely residents (no case)."""
    return sum(1 for p in LIKELY if _days_seen(p) >= 3)
