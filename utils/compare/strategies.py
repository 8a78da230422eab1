"""What each strategy is, the hyp and dataset files derived for it, and the child command that trains it."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml

from utils.files import write_text_atomic
from utils.paths import ROOT
from utils.training.run_setup import MIXING_AUGMENTATIONS

ADAPTIVE = ("gradnorm", "uncertainty", "pcgrad")
# What the report weighs against the sweep and the single-task runs: the balancers, the frozen-weights ablation
# (GradNorm's mean weights held fixed) and the independent backbones.
REMEDIES = (*ADAPTIVE, "gradnorm_frozen", "dual")
DEFAULT_VIEW_WEIGHTS = (0.1, 0.3, 1.0, 3.0)
SCRIPTS = {"train": "train.py", "gradnorm": "train_gradnorm.py", "dual": "train_dual.py"}
# Flags the comparison sets itself; giving them after `--` would make the runs disagree with the folders.
CONTROLLED_FLAGS = ("--data", "--epochs", "--seed", "--weights", "--project", "--name", "--resume", "--balancer",
                    "--interference-every", "--evolve")
# Script-specific flags: only the named script accepts them (each takes one value).
SCRIPT_ONLY_PREFIXES = {"--gradnorm-": "train_gradnorm.py", "--cls-": "train_dual.py"}


@dataclass(frozen=True)
class Strategy:
    """How one strategy is trained: which script, which task weights, which dataset variant."""

    name: str
    script: str
    det_task: float | None = None  # None: the given hyp's value
    view_task: float | None = None
    balancer: str | None = None  # train.py --balancer value, if any
    detection_data: bool = False  # train on the YAML without cls_names
    shared: bool = False  # joint strategy on one shared backbone (gets --interference-every)
    has_detection: bool = True  # detection metrics mean something
    has_view: bool = True  # view metrics exist
    frozen_from: str | None = None  # fixed task weights = the mean weights this strategy's run of the same seed used

    @property
    def hyp_key(self) -> str:
        """Name of the derived hyp file this strategy trains with."""
        return "base" if self.det_task is None and self.view_task is None else self.name


def fixed_name(view_weight: float) -> str:
    """fixed_w<v> with v in its shortest form (0.1 -> fixed_w0.1, 1.0 -> fixed_w1)."""
    return f"fixed_w{view_weight:g}"


def parse_fixed_weight(name: str) -> float | None:
    """The view weight of a fixed_w<v> name, or None for any other name."""
    match = re.fullmatch(r"fixed_w(\d+(?:\.\d*)?(?:e-?\d+)?)", name)
    return float(match.group(1)) if match else None


def strategy_spec(name: str) -> Strategy:
    """The Strategy a name stands for (raises ValueError for an unknown name)."""
    weight = parse_fixed_weight(name)
    if weight is not None:
        return Strategy(name, SCRIPTS["train"], det_task=1.0, view_task=weight, shared=True)
    specs = {
        "detection_only": Strategy("detection_only", SCRIPTS["train"], detection_data=True, has_view=False),
        "view_only": Strategy("view_only", SCRIPTS["train"], det_task=0.0, view_task=1.0, has_detection=False),
        "gradnorm": Strategy("gradnorm", SCRIPTS["gradnorm"], shared=True),
        "uncertainty": Strategy("uncertainty", SCRIPTS["train"], balancer="uncertainty", shared=True),
        "pcgrad": Strategy("pcgrad", SCRIPTS["train"], balancer="pcgrad", shared=True),
        "gradnorm_frozen": Strategy("gradnorm_frozen", SCRIPTS["train"], shared=True, frozen_from="gradnorm"),
        "dual": Strategy("dual", SCRIPTS["dual"]),
    }
    if name not in specs:
        raise ValueError(f"unknown strategy {name!r}: expected detection_only, view_only, fixed_w<v>, "
                         f"{', '.join(ADAPTIVE)}, gradnorm_frozen or dual")
    return specs[name]


def default_strategies(view_weights: Iterable[float]) -> list[str]:
    """Every strategy, the fixed-weight sweep in --view-weights order (a weight given twice runs once)."""
    return list(dict.fromkeys(["detection_only", "view_only", *[fixed_name(w) for w in view_weights], *ADAPTIVE,
                               "dual"]))


def resolve_strategies(names: list[str] | None, view_weights: Iterable[float]) -> list[str]:
    """--strategies as canonical names (joint_fixed -> fixed_w1, fixed_w1.0 -> fixed_w1), duplicates dropped."""
    if not names:
        return default_strategies(view_weights)
    resolved = []
    for name in names:
        name = "fixed_w1" if name == "joint_fixed" else name
        weight = parse_fixed_weight(name)
        name = fixed_name(weight) if weight is not None else name
        strategy_spec(name)  # validates
        if name not in resolved:
            resolved.append(name)
    for name in list(resolved):
        source = strategy_spec(name).frozen_from
        if source is None:
            continue
        if source not in resolved:
            raise ValueError(f"{name} needs {source} in --strategies: it trains with the mean task weights of the "
                             f"{source} run of the same seed")
        resolved.remove(name)
        resolved.insert(resolved.index(source) + 1, name)  # right after its source, which must finish first
    return resolved


def mean_task_weights(history: dict) -> dict[str, float] | None:
    """The mean weight of each task over an adaptive run's optimizer steps (training_history.json 'steps')."""
    steps = [s["weights"] for s in history.get("steps", []) if isinstance(s.get("weights"), dict)]
    if not steps:
        return None
    return {task: sum(float(w[task]) for w in steps) / len(steps) for task in steps[0]}


def write_frozen_hyp(source_history: dict, template: Path, out: Path, source: str) -> dict[str, float] | None:
    """`template` with det_task/view_task set to the source run's mean task weights, written to `out`.

    The ablation behind gradnorm_frozen: GradNorm's weights held fixed from the first step at the values it
    used on average, so a difference to gradnorm is the schedule (weights that move), not the ratio. The mean
    over steps rather than the final weights: the final ones were used for one step only. Returns the
    weights, or None when the source recorded no step.
    """
    weights = mean_task_weights(source_history)
    if weights is None or not {"det", "view"} <= set(weights):
        return None
    hyp = yaml.safe_load(template.read_text()) or {}
    hyp.update(det_task=round(weights["det"], 6), view_task=round(weights["view"], 6))
    write_yaml(out, hyp, f"derived by compare.py: fixed task weights = the mean weights of {source} over its "
                         f"optimizer steps")
    return weights


def derived_hyp(base: dict, det_task: float | None = None, view_task: float | None = None) -> dict:
    """A copy of `base` with the task weights set (None keeps base's) and mosaic/mixup/copy-paste off, unless
    `base` sets mask_mixed_views: true (then they stay on in every run, mixed images training detection only).

    The engine switches the mixing augmentations off whenever the data has a view task (without
    mask_mixed_views); doing it in every derived file gives detection_only the same augmentation
    as the joint runs.
    """
    hyp = dict(base)
    for key, value in (("det_task", det_task), ("view_task", view_task)):
        if value is not None:
            hyp[key] = float(value)
    if not hyp.get("mask_mixed_views", False):
        for key in MIXING_AUGMENTATIONS:
            if key in hyp:
                hyp[key] = 0.0
    return hyp


def detection_only_content(content: dict) -> dict:
    """The dataset YAML without cls_names, `path` absolute (as check_dataset resolves it) so it can live anywhere."""
    derived = {k: v for k, v in content.items() if k != "cls_names"}
    root = Path(content["path"]) if content.get("path") else ROOT
    derived["path"] = str(root if root.is_absolute() else (ROOT / root).resolve())
    return derived


def write_yaml(path: Path, content: dict, header: str) -> Path:
    """Write `content` as YAML with a comment header; returns the path."""
    write_text_atomic(path, f"# {header}\n" + yaml.safe_dump(content, sort_keys=False))  # a running child may read it
    return path


def split_labels(paths: list[Path]) -> list[str]:
    """A short unique label per dataset YAML: its stem, or its folder's name where stems collide.

    data/med.yaml -> med; with runs/splits/med_patient_s0/med.yaml beside it -> med, med_patient_s0.
    """
    stems = [p.stem for p in paths]
    labels = []
    for path, stem in zip(paths, stems):
        collides = stems.count(stem) > 1
        in_data_dir = path.resolve().parent == (ROOT / "data").resolve()
        labels.append(path.parent.name if collides and not in_data_dir and path.parent.name else stem)
    unique = []
    for label in labels:
        candidate, n = label, 2
        while candidate in unique:
            candidate, n = f"{label}_{n}", n + 1
        unique.append(candidate)
    return unique


def _flag_name(arg: str) -> str:
    """--flag of "--flag" or "--flag=value"."""
    return arg.split("=", 1)[0]


def check_extra_args(extra: list[str]) -> None:
    """Refuse flags after `--` that this script sets itself (one sentence naming them)."""
    bad = sorted({_flag_name(a) for a in extra if _flag_name(a) in CONTROLLED_FLAGS})
    if bad:
        raise SystemExit(f"compare.py sets {', '.join(bad)} itself (use --data/--epochs/--seeds/--name/"
                         f"--interference-every of compare.py); remove them after '--'")


def filter_extra_args(extra: list[str], script: str) -> list[str]:
    """`extra` without --hyp (replaced by a derived file) and without other scripts' own flags."""
    out, skip = [], False
    for i, arg in enumerate(extra):
        if skip:
            skip = False
            continue
        name = _flag_name(arg)
        owner = next((s for prefix, s in SCRIPT_ONLY_PREFIXES.items() if name.startswith(prefix)), None)
        if name == "--hyp" or (owner is not None and owner != script):
            skip = "=" not in arg and i + 1 < len(extra) and not extra[i + 1].startswith("--")
            continue
        out.append(arg)
    return out


def build_command(strategy: Strategy, *, data: Path, hyp: Path, epochs: int, seed: int, project: Path, name: str,
                  interference_every: int = 0, extra: list[str] | None = None,
                  python: str = sys.executable) -> list[str]:
    """The child command line of one run (the project's own script, every extra flag passed through)."""
    cmd = [python, str(ROOT / strategy.script), *filter_extra_args(list(extra or []), strategy.script),
           "--data", str(data), "--hyp", str(hyp), "--epochs", str(epochs), "--seed", str(seed), "--weights", "",
           "--exist-ok", "--project", str(project), "--name", name]
    if strategy.balancer:
        cmd += ["--balancer", strategy.balancer]
    if strategy.shared and interference_every > 0:
        cmd += ["--interference-every", str(interference_every)]
    if strategy.name == "view_only" and "--fitness" not in {_flag_name(a) for a in extra or []}:
        cmd += ["--fitness", "joint"]  # detection fitness is noise here: pick best.pt by the view too
    return cmd
