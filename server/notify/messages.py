"""What a notification says, in English and Simplified Chinese (a small catalogue of its own).

Every message says what happened, what to do, and links to the case when
there is one. No names, no faces: a thumbnail is added only by the channel's
opt-in (webhook and e-mail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LANGUAGES = ("en", "zh-CN")

_TITLES: dict[str, dict[str, str]] = {
    "en": {
        "case.opened": "New case #{case_id} at {site}",
        "case.unassigned": "Case #{case_id} at {site} still unassigned after {hours} h",
        "case.reopened": "Case #{case_id} at {site} reopened",
        "device.offline": "Device {device} at {site} is offline",
        "device.online": "Device {device} at {site} is back online",
        "import.finished": "Registry import into {site} finished",
        "test": "Lintel test message for {site}",
        "digest": "{count} Lintel events at {site}",
    },
    "zh-CN": {
        "case.opened": "{site} 新核查任务 #{case_id}",
        "case.unassigned": "{site} 核查任务 #{case_id} 已 {hours} 小时未分配",
        "case.reopened": "{site} 核查任务 #{case_id} 已重新打开",
        "device.offline": "{site} 设备 {device} 离线",
        "device.online": "{site} 设备 {device} 已恢复在线",
        "import.finished": "{site} 登记表导入完成",
        "test": "Lintel 测试消息({site})",
        "digest": "{site} 共 {count} 条 Lintel 事件",
    },
}

_BODIES: dict[str, dict[str, str]] = {
    "en": {
        "case.opened": "An unregistered face was seen on {days} different days "
        "({night_entries} late entries). Open the case, check the unit and record the outcome.",
        "case.opened.desk_check": "A face seen on {days} different days may be a registered "
        "occupant whose photo the door camera does not match (a desk check). Compare the faces "
        "on the case page; no visit is needed.",
        "case.unassigned": "Nobody has taken this case yet. Assign it to a manager.",
        "case.reopened": "An outcome was undone. Look at the case again.",
        "device.offline": "No heartbeat since {last_heartbeat} (UTC). Check the box's power "
        "and network; its cameras are not watching.",
        "device.online": "Heartbeats arrive again. Nothing to do.",
        "import.finished": "Rows: {rows}; occupants created {created}, updated {updated}, "
        "unchanged {unchanged}, moved out {moved_out}; rows failed {failed}. "
        "Check the failed rows in the import report.",
        "test": "If you can read this, the channel works.",
        "digest": "Events since the last digest:",
    },
    "zh-CN": {
        "case.opened": "一张未登记的面孔在 {days} 个不同日期出现(夜间进入 {night_entries} 次)。"
        "请打开任务,核实该户并记录结果。",
        "case.opened.desk_check": "一张在 {days} 个不同日期出现的面孔可能是已登记住户"
        "(门口摄像头未能与其登记照片匹配),请在任务页面比对面孔(台账核对),无需上门。",
        "case.unassigned": "该任务尚无人处理,请分配给管理员。",
        "case.reopened": "一个处理结果已被撤销,请重新查看该任务。",
        "device.offline": "自 {last_heartbeat}(UTC)起无心跳。"
        "请检查设备电源和网络;其摄像头目前未在工作。",
        "device.online": "心跳已恢复,无需处理。",
        "import.finished": "行数 {rows};新增住户 {created},更新 {updated},未变 {unchanged},"
        "迁出 {moved_out};失败行 {failed}。请在导入报告中查看失败的行。",
        "test": "看到这条消息说明通道工作正常。",
        "digest": "自上次汇总以来的事件:",
    },
}

_OPEN = {"en": "Open the case", "zh-CN": "打开任务"}


class _Blank(dict[str, Any]):
    """Format values with a dash for anything the event did not carry."""

    def __missing__(self, key: str) -> str:
        return "-"


@dataclass(frozen=True)
class Message:
    """A rendered notification: a title, plain text, and a link (may be empty)."""

    title: str
    text: str
    link: str

    def markdown(self) -> str:
        """DingTalk/WeCom markdown: a heading, the text, the link."""
        out = f"### {self.title}\n\n{self.text}"
        if self.link:
            out += f"\n\n[{self.link}]({self.link})"
        return out

    def plain(self) -> str:
        """The e-mail's text part."""
        return f"{self.title}\n\n{self.text}" + (f"\n\n{self.link}\n" if self.link else "\n")


def render(
    *, kind: str, data: dict[str, Any], site: str, language: str, link_base: str | None
) -> Message:
    """The message for one event in ``language`` (English when the language is unknown)."""
    lang = language if language in _TITLES else "en"
    values = _Blank(data)
    values["site"] = site
    title = _TITLES[lang].get(kind, kind).format_map(values)
    body = f"{kind}.desk_check" if kind == "case.opened" and data.get("desk_check") else kind
    text = _BODIES[lang].get(body, "").format_map(values)
    link = ""
    if "case_id" in data and link_base:
        link = f"{link_base.rstrip('/')}/web/cases/{data['case_id']}"
        text += f"\n\n{_OPEN[lang]}: {link}"
    return Message(title=title, text=text, link=link)


def render_digest(
    *, site: str, language: str, messages: list[Message], link_base: str | None
) -> Message:
    """One message listing several events (a channel with the daily digest on)."""
    lang = language if language in _TITLES else "en"
    values = _Blank(site=site, count=len(messages))
    lines = [_BODIES[lang]["digest"].format_map(values)]
    lines += [f"- {m.title}" + (f" ({m.link})" if m.link else "") for m in messages]
    return Message(title=_TITLES[lang]["digest"].format_map(values), text="\n".join(lines), link="")
