"""DICOM in: the CT series in the input folder's sub-folders, .zip files and loose DICOM files.

Each CT series (one Series Instance UID) is one case, named after the patient ID, study date,
series number and description. A series that is not CT, a localiser (scout) or too thin for a
volume is skipped with one line saying why. Reading a series and checking its slices is
dicom_geometry.py's work; this module only finds and names them. pydicom is imported only when
there is something that looks like DICOM, so NIfTI runs do not pay for it.
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MIN_SLICES = 10           # fewer slice positions than this is not an abdominal CT volume
LOCALISER_WORDS = ("LOCALIZER", "LOCALISER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM")
MAX_NAME = 96
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
HEADER_TAGS = ("SeriesInstanceUID", "StudyInstanceUID", "Modality", "ImageType", "SeriesDescription",
               "SeriesNumber", "PatientID", "StudyDate", "ImagePositionPatient", "ImageOrientationPatient")


@dataclass(frozen=True)
class DicomSeries:
    uid: str
    files: tuple[Path, ...]   # every file of the series, in no particular order
    label: str                # how messages name it: series number and description


@dataclass
class Found:
    """What the DICOM entries of the input folder hold."""
    series: list[tuple[str, DicomSeries, Path]] = field(default_factory=list)  # (case name, series, entry)
    skipped: list[tuple[Path, str]] = field(default_factory=list)              # (entry, why) per note
    failed: list[tuple[str, str]] = field(default_factory=list)                # (case name, error)
    not_dicom: list[Path] = field(default_factory=list)                        # entries with no DICOM file


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def find_series(entries: list[Path], scratch: Callable[[], Path], taken: set[str]) -> Found:
    """The CT series in `entries` (top-level folders, .zip files and other files of the input
    folder). `scratch()` gives an empty folder to unpack a .zip into; `taken` holds the case
    names already used, and grows with every series named here."""
    found = Found()
    loose = [entry for entry in entries if entry.is_file() and entry.suffix.lower() != ".zip"]
    dicom = [entry for entry in loose if is_dicom_file(entry)]
    found.not_dicom += [entry for entry in loose if entry not in dicom]
    sources = [(entry, None) for entry in entries if entry not in loose]
    if dicom:  # the files of a series may lie in the input folder itself: they are grouped together
        sources.append((dicom[0].parent, dicom))
    for entry, files in sources:
        if files is None:
            try:
                files = _dicom_files(entry, scratch)
            except Exception as err:  # a bad or unsupported .zip (BadZipFile, OSError, ...) fails alone
                found.failed.append((_safe(entry.stem), f"{entry.name}: cannot read the .zip file ({err})"))
                continue
            if not files:
                found.not_dicom.append(entry)
                continue
        _add_series(found, entry, files, taken)
    return found


def _add_series(found: Found, entry: Path, files: list[Path], taken: set[str]) -> None:
    groups, unreadable = _group_by_series(files)
    if unreadable:
        found.skipped.append((entry, f"{len(unreadable)} unreadable DICOM file(s), first "
                                     f"{unreadable[0][0].name}: {unreadable[0][1]}"))
    for uid, headers in sorted(groups.items(), key=lambda item: _sort_key(item[1][0][1])):
        label = _label(headers[0][1])
        try:
            why = skip_reason(headers)
        except (ValueError, TypeError, AttributeError) as err:  # a malformed position, say
            why = f"unreadable slice positions ({type(err).__name__}: {err})"
        if why:
            found.skipped.append((entry, f"{label}: {why}"))
            continue
        name = _unique(case_name(headers[0][1], uid), uid, taken)
        found.series.append((name, DicomSeries(uid, tuple(path for path, _ in headers), label), entry))


def _dicom_files(entry: Path, scratch: Callable[[], Path]) -> list[Path]:
    """The DICOM files of a folder (all its sub-folders) or of a .zip file."""
    if entry.is_dir():
        return _walk(entry)
    target = scratch()
    with zipfile.ZipFile(entry) as archive:
        archive.extractall(target)  # zipfile drops absolute paths and '..' from member names
    return _walk(target)


def _walk(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files += [Path(root) / name for name in sorted(names) if is_dicom_file(Path(root) / name)]
    return files


def _group_by_series(files: list[Path]):
    """{series UID: [(path, header)]} and [(path, why)] for DICOM files whose header cannot be read
    or has no series UID. A DICOMDIR (an index of the files, not an image) is left out quietly."""
    import pydicom
    groups: dict[str, list] = defaultdict(list)
    unreadable = []
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        except Exception as err:  # pydicom raises many kinds; one bad file never stops the run
            unreadable.append((path, f"{type(err).__name__}: {err}"))
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if uid:
            groups[uid].append((path, header))
        elif getattr(header.get("file_meta"), "MediaStorageSOPClassUID", None) != DICOMDIR_CLASS:
            unreadable.append((path, "no Series Instance UID (truncated, or not an image)"))
    return groups, unreadable


def skip_reason(headers) -> str | None:
    """Why a series is not a case: not CT, a localiser, or too few slice positions."""
    first = headers[0][1]
    modality = str(first.get("Modality", "") or "unknown")
    if modality != "CT":
        return f"modality {modality}, not CT"
    words = " ".join(str(v) for v in (first.get("ImageType") or [])) + " " + str(first.get("SeriesDescription", ""))
    if any(word in words.upper() for word in LOCALISER_WORDS):
        return "a localiser (scout) image, not a volume"
    positions = {tuple(round(float(v), 1) for v in h.get("ImagePositionPatient") or ()) for _, h in headers}
    if len(positions) < MIN_SLICES:
        return f"{len(positions)} slice position(s): too thin for a volume (at least {MIN_SLICES} needed)"
    return None


def case_name(header, uid: str) -> str:
    """Patient ID, study date, series number and description, safe as a file name."""
    parts = [header.get(tag) for tag in ("PatientID", "StudyDate", "SeriesNumber", "SeriesDescription")]
    name = _safe("_".join(str(p) for p in parts if p not in (None, "")))
    return name or f"series_{_short_hash(uid)}"


def _safe(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.-]+", "_", text)).strip("._-")[:MAX_NAME]


def _short_hash(uid: str) -> str:
    return hashlib.sha1(uid.encode()).hexdigest()[:8]


def _unique(name: str, uid: str, taken: set[str]) -> str:
    """Two series with the same name (or a NIfTI case of that name): the later one gets a
    suffix from its series UID, so no case overwrites another."""
    if name in taken:
        name = f"{name}_{_short_hash(uid)}"
    taken.add(name)
    return name


def _label(header) -> str:
    number = header.get("SeriesNumber", "?")
    description = str(header.get("SeriesDescription", "") or "").strip()
    return f"series {number}" + (f" {description!r}" if description else "")


def _sort_key(header) -> tuple:
    return tuple(str(header.get(tag, "")) for tag in ("PatientID", "StudyDate", "SeriesNumber", "SeriesInstanceUID"))
