"""``lintel-registry`` end to end: exit codes, reports, no tracebacks for user mistakes."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

from registry.cli import main
from tests.registry.helpers import (
    BILLION_LAUGHS,
    HEADER,
    ROWS,
    XLSX_HEADER,
    hostile_xlsx,
    make_id,
    xlsx_row,
)


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LINTEL_SECRET_KEY", "cli-test-secret-0123456789")
    monkeypatch.setenv("LINTEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LINTEL_DATABASE_URL", raising=False)


def _csv(tmp_path: Path, rows: list[str], name: str = "reg.csv") -> Path:
    path = tmp_path / name
    path.write_bytes((HEADER + "".join(rows)).encode("gbk"))
    return path


def _zip(tmp_path: Path, photo_bytes: dict[str, bytes], extra: dict[str, bytes]) -> Path:
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in {**photo_bytes, **extra}.items():
            archive.writestr(f"照片/{name}", data)
    return path


def test_import_from_zip_report_and_reimport(
    tmp_path: Path, photo_bytes: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    reg = _csv(tmp_path, ROWS)
    photos = _zip(tmp_path, photo_bytes, {})
    report = tmp_path / "report.json"
    argv = ["import", "--site", "幸福小区", str(reg), "--photos", str(photos), "--db", db]
    assert main([*argv, "--report", str(report)]) == 0
    out, err = capsys.readouterr()
    assert "enrolling" not in err  # no progress bar when stderr is not a terminal
    assert "created 4, updated 0, unchanged 0, moved out 0, failed 0" in out
    assert "(new site)" in out
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["summary"]["created"] == 4 and data["written"] and data["issues"] == []

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "created 0, updated 0, unchanged 4" in out
    assert "(new site)" not in out


def test_bad_rows_exit_1_and_the_csv_report_names_them(
    tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_path = tmp_path / "l.sqlite3"
    rows = [
        *ROWS[:2],
        f"孙七,{make_id(9)[:17]}{'X' if make_id(9)[17] != 'X' else '0'},,3-2-1,业主,,,E9\n",
    ]
    report = tmp_path / "report.csv"
    code = main(
        [
            "import",
            "--site",
            "s",
            str(_csv(tmp_path, rows)),
            "--photos",
            str(photo_dir),
            "--db",
            f"sqlite:///{db_path}",
            "--report",
            str(report),
        ]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "row 4 (孙七), 证件号码" in out and "nothing written" in out and "--partial" in out
    with report.open(encoding="utf-8-sig", newline="") as handle:
        (issue,) = list(csv.DictReader(handle))
    assert (issue["row"], issue["column"], issue["reason"]) == ("4", "证件号码", "bad_id_number")
    assert make_id(9)[:17] not in report.read_text(encoding="utf-8-sig")


@pytest.mark.parametrize(
    ("entry", "data", "fragment"),
    [
        ("../../evil.jpg", b"x", "outside the archive"),
        ("bomb.jpg", bytes(8 * 1024 * 1024), "zip bomb"),
    ],
)
def test_unsafe_zip_exits_2_without_traceback(
    tmp_path: Path,
    photo_bytes: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
    entry: str,
    data: bytes,
    fragment: str,
) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("p0.jpg", photo_bytes["p0.jpg"])
        zf.writestr(entry, data)
    db_path = tmp_path / "l.sqlite3"
    code = main(
        [
            "import",
            "--site",
            "s",
            str(_csv(tmp_path, ROWS)),
            "--photos",
            str(archive),
            "--db",
            f"sqlite:///{db_path}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--server", "ftp://x", "--token", "t"], "server's URL"),
        (["--token", "t"], "--token is for --server"),
        (["--report", "r.txt"], ".csv or .json"),
        (["--report", "no/such/folder/r.csv"], "folder does not exist"),
        (["--db", "not a url"], "not a database URL"),
    ],
)
def test_option_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    code = main(["import", "--site", "s", str(_csv(tmp_path, ROWS)), *args])
    assert code == 2
    assert fragment in capsys.readouterr().err


def test_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    assert main(["import", "--site", "s", str(tmp_path / "nope.csv"), "--db", db]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n", encoding="utf-8")
    assert main(["import", "--site", "s", str(bad), "--db", db]) == 2
    assert "missing column" in capsys.readouterr().err
    # Photos named but no --photos given.
    assert main(["import", "--site", "s", str(_csv(tmp_path, ROWS)), "--db", db]) == 2
    assert "--photos" in capsys.readouterr().err


def test_dry_run_does_not_create_the_database(
    tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_path = tmp_path / "l.sqlite3"
    code = main(
        [
            "import",
            "--site",
            "s",
            str(_csv(tmp_path, ROWS)),
            "--photos",
            str(photo_dir),
            "--db",
            f"sqlite:///{db_path}",
            "--dry-run",
            "--progress",
        ]
    )
    assert code == 0
    out, err = capsys.readouterr()
    assert "would create 4" in out and "dry run, nothing written" in out
    assert "enrolling" in err and "4/4" in err  # --progress forces the bar
    assert not db_path.exists()


def test_xlsx_with_english_headers_and_split_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Name", "External ID", "Building", "Entrance", "Room", "Role"])
    sheet.append(["Zhang San", "E1", "3", "2", "1203", "owner"])
    sheet.append(["Li Si", "E2", "三幢", "二单元", "1203室", "family"])
    path = tmp_path / "reg.xlsx"
    workbook.save(path)
    db = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    assert main(["import", "--site", "s", str(path), "--db", db]) == 0
    assert "created 2" in capsys.readouterr().out


def test_template_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "t.xlsx"
    assert main(["template", str(target)]) == 0
    assert target.exists()
    assert main(["template", str(target)]) == 2
    assert "exists" in capsys.readouterr().err


def test_hostile_xlsx_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet_data = xlsx_row(1, XLSX_HEADER) + xlsx_row(2, ["张三", "E1", "3-2-1203", "&lol9;"])
    path = hostile_xlsx(tmp_path / "laughs.xlsx", sheet_data, prolog=BILLION_LAUGHS)
    code = main(["import", "--site", "s", str(path), "--db", f"sqlite:///{tmp_path / 'l.db'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "not a readable XLSX" in err and "Traceback" not in err


def test_the_template_shows_two_photos_per_person(tmp_path: Path) -> None:
    # Two registry photos per resident are the recommended standard (issue 13).
    from registry.validate import split_photos

    target = tmp_path / "t.csv"
    assert main(["template", str(target)]) == 0
    with target.open(encoding="utf-8-sig") as fh:
        header, *rows = [r for r in csv.reader(fh) if not r[0].startswith("#")]
    cells = [r[header.index("照片")] for r in rows]
    assert len(cells) == 2
    assert all(len(split_photos(c)) == 2 for c in cells), cells
