"""Real-format HL7 v2 messages for the ingest tests, built segment by segment with fields by number
(so a field lands where the standard puts it, e.g. PV1-19 is the 19th field after the segment id)."""

from __future__ import annotations

MLLP_START, MLLP_END = b"\x0b", b"\x1c\r"


def segment(name: str, fields: dict[int, str]) -> str:
    """One segment: ``fields`` maps field numbers to their (already escaped) text."""
    if name == "MSH":
        # MSH-1 is the field separator itself and MSH-2 the encoding characters
        values = ["^~\\&"] + [fields.get(n, "") for n in range(3, max(fields, default=2) + 1)]
        return "MSH|" + "|".join(values)
    return "|".join([name] + [fields.get(n, "") for n in range(1, max(fields, default=0) + 1)])


def message(*segments: str) -> bytes:
    return ("\r".join(segments) + "\r").encode("utf-8")


def msh(
    kind: str, control: str, *, when: str = "20260301101500-0500", charset: str = "", **extra: str
) -> str:
    fields = {
        3: "EPIC",
        4: "NORTH",
        5: "NOTESTREAM",
        6: "NORTH",
        7: when,
        9: kind,
        10: control,
        11: "P",
        12: "2.5",
    }
    if charset:
        fields[18] = charset
    fields.update({int(k[1:]): v for k, v in extra.items()})  # f15="AL" sets MSH-15
    return segment("MSH", fields)


def pid(patient: str = "22532") -> str:
    return segment("PID", {1: "1", 3: f"{patient}^^^NORTH^MR~999^^^SSA^SS", 5: "DOE^JANE"})


def pv1(encounter: str = "167853", *, admit: str = "", discharge: str = "") -> str:
    fields = {1: "1", 2: "I", 3: "W7^712^1", 4: "E", 19: encounter}
    if admit:
        fields[44] = admit
    if discharge:
        fields[45] = discharge
    return segment("PV1", fields)


def evn(trigger: str, when: str = "20260301080000-0500") -> str:
    return segment("EVN", {1: trigger, 2: when})


def txa(
    doc: str, *, kind: str = "PN", when: str = "20260301093000-0500", edited: str = "", parent: str = ""
) -> str:
    fields = {1: "1", 2: kind, 3: "TX", 4: when, 12: doc, 17: "AU"}
    if edited:
        fields[8] = edited
    if parent:
        fields[13] = parent
    return segment("TXA", fields)


def obx(n: int, text: str, value_type: str = "TX", status: str = "F") -> str:
    return segment("OBX", {1: str(n), 2: value_type, 3: "NOTE^Note text", 5: text, 11: status})


def obr(order: str, *, status: str = "F", when: str = "20260301120000-0500", reported: str = "") -> str:
    fields = {1: "1", 3: order, 4: "71020^XR CHEST 2V^CPT", 7: when, 25: status}
    if reported:
        fields[22] = reported
    return segment("OBR", fields)


def adt(
    trigger: str, control: str, *, encounter: str = "167853", admit: str = "", discharge: str = ""
) -> bytes:
    return message(
        msh(f"ADT^{trigger}^ADT_A01", control),
        evn(trigger),
        pid(),
        pv1(encounter, admit=admit, discharge=discharge),
    )


def mdm(
    trigger: str, control: str, doc: str, *texts: str, encounter: str = "167853", **txa_options: str
) -> bytes:
    return message(
        msh(f"MDM^{trigger}^MDM_T02", control),
        evn(trigger),
        pid(),
        pv1(encounter),
        txa(doc, **txa_options),
        *(obx(i + 1, t) for i, t in enumerate(texts)),
    )


def framed(*messages: bytes) -> bytes:
    """Messages in MLLP frames, as ``mllp_send`` reads them from a file."""
    return b"".join(MLLP_START + m + MLLP_END for m in messages)
