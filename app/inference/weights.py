"""The weights folder: plans.json, fold_N.safetensors, postprocessing.json and MANIFEST.json.

No pickle is ever loaded here: tensors come from safetensors, everything else from JSON, and every
file is checked against MANIFEST.json's sha256 before use.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1
FOLD_FILE = re.compile(r"^fold_(\d+)\.safetensors$")
LOCALISER_PLANS, LOCALISER_STATE = "localiser_plans.json", "localiser.safetensors"


class WeightsError(RuntimeError):
    """The weights folder is missing, incomplete or altered."""


@dataclass(frozen=True)
class NetworkSpec:
    """Everything Generic_UNet's constructor needs, as nnUNetTrainerV2 fills it in."""
    input_channels: int
    base_num_features: int
    num_classes: int  # background included
    pool_op_kernel_sizes: tuple[tuple[int, ...], ...]
    conv_kernel_sizes: tuple[tuple[int, ...], ...]
    conv_per_stage: int = 2


@dataclass(frozen=True)
class Plan:
    """What inference needs from nnU-Net's plans.pkl, in the network's (transposed) axis order."""
    network: NetworkSpec
    patch_size: tuple[int, ...]
    target_spacing: tuple[float, ...]        # transposed axis order, mm
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    intensity_mean: float
    intensity_sd: float
    intensity_lower: float                   # percentile 0.5 of the training foreground
    intensity_upper: float                   # percentile 99.5
    mirror_axes: tuple[int, ...]
    separate_z_anisotropy_threshold: float
    labels: dict[int, str]
    training_orientation: str | None = None  # e.g. "LPS"; None: inputs are used as stored
    # v1's segmentation_export_params: 0 (its default) takes the nearest network slice along the
    # low-resolution axis of an anisotropic input; 1 interpolates linearly along it too
    export_interpolation_order_z: int = 0

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        if data.get("format_version") != FORMAT_VERSION:
            raise WeightsError(f"plans.json format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        net = data["network"]
        norm = data["normalization"]
        if norm.get("scheme") != "CT":
            raise WeightsError(f"only CT normalisation is supported, plans.json says {norm.get('scheme')!r}")
        return cls(
            network=NetworkSpec(
                input_channels=int(net["input_channels"]),
                base_num_features=int(net["base_num_features"]),
                num_classes=int(net["num_classes"]),
                pool_op_kernel_sizes=tuple(tuple(int(v) for v in k) for k in net["pool_op_kernel_sizes"]),
                conv_kernel_sizes=tuple(tuple(int(v) for v in k) for k in net["conv_kernel_sizes"]),
                conv_per_stage=int(net.get("conv_per_stage", 2)),
            ),
            patch_size=tuple(int(v) for v in data["patch_size"]),
            target_spacing=tuple(float(v) for v in data["target_spacing"]),
            transpose_forward=tuple(int(v) for v in data["transpose_forward"]),
            transpose_backward=tuple(int(v) for v in data["transpose_backward"]),
            intensity_mean=float(norm["mean"]),
            intensity_sd=float(norm["sd"]),
            intensity_lower=float(norm["lower"]),
            intensity_upper=float(norm["upper"]),
            mirror_axes=tuple(int(v) for v in data.get("mirror_axes", (0, 1, 2))),
            separate_z_anisotropy_threshold=float(data.get("separate_z_anisotropy_threshold", 3.0)),
            labels={int(k): str(v) for k, v in data["labels"].items()},
            training_orientation=data.get("training_orientation"),
            export_interpolation_order_z=export_order_z(data.get("segmentation_export_params")),
        )


# v1's values when plans carry no segmentation_export_params (nnUNetTrainer.predict / predict_cases)
STOCK_EXPORT_PARAMS = {"force_separate_z": None, "interpolation_order": 1, "interpolation_order_z": 0}


def export_params(params: dict | None, order_z: int | None = None) -> dict:
    """v1's segmentation_export_params completed with its defaults (and `order_z` where given),
    refused unless inference implements them: v1's defaults, with interpolation_order_z 0 or 1."""
    params = {**STOCK_EXPORT_PARAMS, **(params or {})}
    if order_z is not None:
        params["interpolation_order_z"] = order_z
    if params["force_separate_z"] is not None or params["interpolation_order"] != 1 \
            or params["interpolation_order_z"] not in (0, 1):
        raise WeightsError(f"segmentation_export_params {params} are not supported: "
                           "force_separate_z null, interpolation_order 1, interpolation_order_z 0 or 1")
    return params


def export_order_z(params: dict | None) -> int:
    """The export's order along the low-resolution axis."""
    return int(export_params(params)["interpolation_order_z"])


@dataclass(frozen=True)
class Postprocessing:
    """Labels for which only the largest connected component is kept (from cross-validation)."""
    largest_component_labels: tuple[int, ...]

    @classmethod
    def from_json(cls, data: dict) -> "Postprocessing":
        labels: list[int] = []
        for entry in data.get("for_which_classes", []):
            if isinstance(entry, (list, tuple)):
                # nnU-Net writes a list here for region-based training, which this plan never uses.
                raise WeightsError(f"region-based postprocessing entry {entry!r} is not supported")
            labels.append(int(entry))
        return cls(tuple(sorted(labels)))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(weights_dir: Path) -> dict:
    manifest_path = weights_dir / "MANIFEST.json"
    if not weights_dir.is_dir():
        raise WeightsError(f"weights folder {weights_dir} does not exist")
    if not manifest_path.is_file():
        raise WeightsError(f"{manifest_path} is missing: not a weights folder made by `python -m app export-weights`")
    try:
        return json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"{manifest_path} is unreadable: {err}") from err


def verify_manifest(weights_dir: Path, manifest: dict) -> None:
    """Every file MANIFEST.json lists must exist with its sha256; a fold file it does not list is refused."""
    listed = manifest.get("files") or {}
    for required in ("plans.json", "postprocessing.json"):
        if required not in listed:
            raise WeightsError(f"MANIFEST.json in {weights_dir} does not list {required}")
    for name, expected in listed.items():
        path = weights_dir / name
        if not path.is_file():
            raise WeightsError(f"weights file {path} is missing (listed in MANIFEST.json)")
        actual = sha256_of(path)
        if actual != expected:
            raise WeightsError(f"weights file {path} does not match MANIFEST.json "
                               f"(sha256 {actual[:12]}..., expected {expected[:12]}...): altered or corrupt")
    for path in weights_dir.iterdir():
        if FOLD_FILE.match(path.name) and path.name not in listed:
            raise WeightsError(f"{path} is not listed in MANIFEST.json; refusing an unverified fold")


def available_folds(manifest: dict) -> list[int]:
    return sorted(int(m.group(1)) for name in manifest.get("files", {}) if (m := FOLD_FILE.match(name)))


@dataclass(frozen=True)
class Localiser:
    """The coarse model of two-stage prediction: where the organs are, not their outlines."""
    plan: Plan
    state: dict


@dataclass(frozen=True)
class Weights:
    plan: Plan
    postprocessing: Postprocessing
    folds: tuple[int, ...]
    fold_states: tuple[dict, ...]   # fold -> state dict of torch tensors
    manifest: dict
    localiser: Localiser | None = None  # only in weights exported with one (MANIFEST.json lists it)

    @property
    def demo(self) -> bool:
        return are_demo_weights(self.manifest)


def are_demo_weights(manifest: dict) -> bool:
    """The bundled demo weights say so in MANIFEST.json: their evaluation gives demo numbers
    only, and their training data are synthetic phantoms."""
    evaluation = manifest.get("evaluation") or {}
    data = manifest.get("data") or {}
    return bool(evaluation.get("demo_numbers_only")) or "synthetic" in str(data.get("what", "")).lower()


def load_weights(weights_dir: Path, folds: tuple[int, ...] | None = None, max_folds: int | None = None,
                 device: str = "cpu", with_localiser: bool = True) -> Weights:
    """Verify and load. `folds=None` takes every fold the manifest lists, or the first `max_folds`.
    float32 tensors are read straight onto `device` (no host copy kept when it is a GPU). A listed
    localiser is always checked; `with_localiser=False` leaves its tensors unread (one stage)."""
    weights_dir = Path(weights_dir)
    manifest = read_manifest(weights_dir)
    verify_manifest(weights_dir, manifest)
    present = available_folds(manifest)
    chosen = tuple(present[:max_folds] if folds is None else folds)
    missing = [f for f in chosen if f not in present]
    if missing or not chosen:
        raise WeightsError(f"fold(s) {missing or chosen} not in {weights_dir} (it has folds {present})")
    plan = Plan.from_json(json.loads((weights_dir / "plans.json").read_text()))
    post = Postprocessing.from_json(json.loads((weights_dir / "postprocessing.json").read_text()))
    from safetensors.torch import load_file  # lazy: keeps `--help` and errors above fast
    # float32 tensors become the network's own parameters on the device; fp16-stored ones are
    # converted there, so their copies stay on the host instead of doubling the GPU's share
    where = str(device) if manifest.get("storage_dtype", "float32") == "float32" else "cpu"
    states = tuple(load_file(str(weights_dir / f"fold_{f}.safetensors"), device=where) for f in chosen)
    localiser = _load_localiser(weights_dir, manifest, where, plan, with_localiser)
    return Weights(plan, post, chosen, states, manifest, localiser)


def _load_localiser(weights_dir: Path, manifest: dict, device: str, folds_plan: Plan,
                    read_state: bool) -> Localiser | None:
    listed = manifest.get("files", {})
    if LOCALISER_STATE not in listed and LOCALISER_PLANS not in listed:
        return None
    if LOCALISER_STATE not in listed or LOCALISER_PLANS not in listed:
        raise WeightsError(f"MANIFEST.json in {weights_dir} lists only one of {LOCALISER_PLANS} and {LOCALISER_STATE}")
    plan = Plan.from_json(json.loads((weights_dir / LOCALISER_PLANS).read_text()))
    if plan.training_orientation != folds_plan.training_orientation:
        # it sees the CT reoriented for the folds: trained in another orientation, it would look at it flipped
        raise WeightsError(f"the localiser in {weights_dir} was trained in orientation {plan.training_orientation}, "
                           f"the folds in {folds_plan.training_orientation}")
    if not read_state:
        return None
    from safetensors.torch import load_file
    return Localiser(plan, load_file(str(weights_dir / LOCALISER_STATE), device=device))
