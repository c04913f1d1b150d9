"""``python -m dilt doctor [--suite NAME]``: can the selected suite run on this machine?

Checks, in this order, and prints one line per check (``ok``, ``warn``, ``FAIL``, ``info``),
each problem followed by one ``fix:`` line saying what to do:

* config:   the workflow config (and ``--configfile`` overrides) validates; the suite exists;
* versions: Python and every package the artifact needs, against pyproject.toml (torch and
  torchvision are pinned: another build is a FAIL); the slurm executor plugin (warn: only
  needed for ``--profile slurm``);
* devices:  the CUDA GPUs and their memory, or "CPU only"; a suite that asks for GPUs (its
  ``resources`` or a recipe's ``device``) is a warning here, a FAIL when a recipe says
  ``device: cuda`` and neither a GPU nor a SLURM cluster is available;
* TeX:      latexmk and every class and package ``paper/main.tex`` loads, via kpsewhich (no
  latexmk: warn, the workflow builds everything but the PDF; latexmk without a package: FAIL,
  the ``paper`` job would fail);
* SLURM:    sbatch / sinfo / squeue / sacct on PATH, whether a cluster answers, whether the
  cluster profile's partition exists (info and warnings only: local runs do not need it);
* data:     per data set of the suite (its datasets and transfer targets), the files its loader
  requires under ``data_root``, present or missing, with where to get them;
* disk:     free space at ``results_root`` against a rough estimate of what the suite writes.

Exit status 0 when nothing FAILed (the suite can run here), 1 otherwise.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER_TEX = ROOT / "paper" / "main.tex"
CLUSTER_PROFILE = ROOT / "slurm" / "config.yaml"

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
INSTALL = "pip install -e '.[workflow,test]' (in the repository, inside its virtual environment)"
TEX_FIX = ("apt-get install latexmk texlive-latex-recommended texlive-latex-extra texlive-pictures "
           "texlive-science (Debian/Ubuntu), or `tlmgr install {pkgs}` (TeX Live)")

# What each real data set's loader (dilt/data/imagefolders.py) requires under data_root: paths
# (a trailing "/" is a folder that must not be empty) and where to get the files.
DATA_FILES: dict[str, tuple[list[str], str]] = {
    "imagenet": (
        ["imagenet/train/", "imagenet/val/"],
        "ILSVRC-2012 from https://image-net.org/download-images (train and validation tars, "
        "after registering); untar train into imagenet/train/<wnid>/ and sort the validation "
        "images into imagenet/val/<wnid>/ (e.g. with the usual valprep.sh)"),
    "cifar100": (
        ["cifar100/cifar-100-python/train", "cifar100/cifar-100-python/test",
         "cifar100/cifar-100-python/meta"],
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (the python version), "
        "unpacked into <data_root>/cifar100/"),
    "stanford_cars": (
        ["stanford_cars/cars_train/", "stanford_cars/cars_test/", "stanford_cars/devkit/cars_meta.mat",
         "stanford_cars/devkit/cars_train_annos.mat", "stanford_cars/cars_test_annos_withlabels.mat"],
        "the Stanford Cars images and devkit (the original Stanford URLs are gone; mirrors such as "
        "Kaggle's 'stanford-cars-dataset' have cars_train, cars_test, the devkit and "
        "cars_test_annos_withlabels.mat), in torchvision's StanfordCars layout under "
        "<data_root>/stanford_cars/"),
    "cub200": (
        ["cub200/CUB_200_2011/images/", "cub200/CUB_200_2011/images.txt",
         "cub200/CUB_200_2011/image_class_labels.txt", "cub200/CUB_200_2011/train_test_split.txt",
         "cub200/CUB_200_2011/classes.txt"],
        "CUB_200_2011.tgz from https://data.caltech.edu/records/65de6-vp158, unpacked into "
        "<data_root>/cub200/"),
}
EMBEDDED = {"digits": "scikit-learn's bundled digits", "digits_rot": "scikit-learn's digits, rotated"}

# packages the artifact imports under another name than their distribution's
DISTRIBUTIONS = ["torch", "torchvision", "timm", "POT", "safetensors", "numpy", "scipy", "scikit-learn",
                 "pandas", "matplotlib", "PyYAML", "tqdm", "snakemake", "jsonschema"]
SLURM_PLUGIN = "snakemake-executor-plugin-slurm"


@dataclass
class Check:
    area: str
    name: str
    status: str
    detail: str
    fix: str = ""


# --- versions ------------------------------------------------------------------------------------

def _requirements() -> dict[str, str]:
    """distribution name (lower case) -> its specifier in pyproject.toml (dependencies and the
    workflow and test extras)."""
    import tomllib

    try:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    except (OSError, KeyError, ValueError):
        return {}
    reqs = list(project.get("dependencies", []))
    for extra in ("workflow", "test"):
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    out = {}
    for r in reqs:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)$", r)
        if m:
            out[m.group(1).lower()] = m.group(2).strip()
    return out


def _satisfies(version: str, spec: str) -> bool:
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(spec).contains(version, prereleases=True)
    except ImportError:  # pragma: no cover - packaging ships with pip, setuptools and snakemake
        pins = [s.strip()[2:] for s in spec.split(",") if s.strip().startswith("==")]
        return all(version.split("+")[0] == p for p in pins)


def check_versions() -> list[Check]:
    reqs = _requirements()
    checks = []
    py = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info >= (3, 10)
    checks.append(Check("versions", "python", OK if ok else FAIL, f"python {py} ({sys.executable})",
                        "" if ok else "use Python 3.10 or newer (python3 -m venv .venv with a newer python3)"))
    for dist in DISTRIBUTIONS + [SLURM_PLUGIN]:
        spec = reqs.get(dist.lower(), "")
        optional = dist == SLURM_PLUGIN
        try:
            v = md.version(dist)
        except md.PackageNotFoundError:
            what = "not installed" + (" (needed only for --profile slurm)" if optional else "")
            checks.append(Check("versions", dist, WARN if optional else FAIL, f"{dist}: {what}",
                                f"pip install '{dist}{spec}'" if optional else INSTALL))
            continue
        if _satisfies(v, spec):
            checks.append(Check("versions", dist, OK, f"{dist} {v}"))
        else:
            checks.append(Check("versions", dist, WARN if optional else FAIL,
                                f"{dist} {v} does not satisfy {spec} (pyproject.toml)",
                                f"pip install '{dist}{spec}' (or {INSTALL})"))
    return checks


# --- devices -------------------------------------------------------------------------------------

def _suite_wants_gpu(suite) -> tuple[bool, list[str]]:
    """(any stage asks for GPUs in `resources`, the recipes that say device: cuda*)."""
    res = suite.spec.get("resources") or {}
    wants = any(int((r or {}).get("gpu", 0) or 0) > 0 for r in res.values())
    cuda = []
    datasets = list(suite.spec["datasets"])
    if suite.spec.get("transfer", {}).get("enabled", True):
        datasets += list(suite.spec.get("transfer", {}).get("targets", []))
    for model in suite.spec["models"]:
        for d in dict.fromkeys(datasets):
            try:
                dev = str(suite.recipe(model, d).device)
            except Exception:  # a recipe the validator accepted but Recipe refuses: the jobs say so
                continue
            if dev.startswith("cuda"):
                cuda.append(f"{model}/{d}")
    return wants, cuda


def check_devices(suite, cluster: bool) -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("devices", "torch", FAIL, "torch cannot be imported, so no device can be used", INSTALL)]
    checks = []
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n:
        for i in range(n):
            p = torch.cuda.get_device_properties(i)
            checks.append(Check("devices", f"cuda:{i}", OK,
                                f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB"))
    else:
        checks.append(Check("devices", "cpu", OK, "CPU only (no CUDA GPU visible to torch "
                            f"{torch.__version__}); {os.cpu_count()} CPU cores"))
    if suite is not None and not n:
        wants, cuda = _suite_wants_gpu(suite)
        if cuda:
            status = WARN if cluster else FAIL
            checks.append(Check("devices", "suite", status,
                                f"suite {suite.name}: recipes {', '.join(cuda)} say device: cuda, and no GPU "
                                "is visible here" + (" (the SLURM cluster may have them)" if cluster else ""),
                                "run on a machine with a CUDA GPU (nvidia-smi lists it), submit through "
                                "`--profile slurm`, or set `device: auto` in the recipe to fall back to the CPU"))
        elif wants:
            checks.append(Check("devices", "suite", WARN,
                                f"suite {suite.name} asks for GPUs in its resources and none is visible "
                                "here: local jobs run on the CPU (slowly)",
                                "submit through `--profile slurm` to a GPU partition, or run on a GPU machine"))
    return checks


# --- TeX -----------------------------------------------------------------------------------------

def paper_packages(tex: Path = PAPER_TEX) -> list[str]:
    """The classes (``.cls``) and packages (``.sty``) the manuscript loads."""
    try:
        text = tex.read_text()
    except OSError:
        return []
    text = "\n".join(line.split("%", 1)[0] for line in text.splitlines())
    files = [f"{c.strip()}.cls" for c in re.findall(r"\\documentclass(?:\[[^\]]*\])?\{([^}]*)\}", text)]
    for group in re.findall(r"\\(?:usepackage|RequirePackage)(?:\[[^\]]*\])?\{([^}]*)\}", text):
        files += [f"{p.strip()}.sty" for p in group.split(",") if p.strip()]
    return list(dict.fromkeys(files))


def check_tex() -> list[Check]:
    latexmk = shutil.which("latexmk")
    kpse = shutil.which("kpsewhich")
    files = paper_packages()
    if latexmk is None:
        return [Check("tex", "latexmk", WARN, "latexmk not found: the workflow builds everything except "
                      "paper/<suite>/main.pdf", TEX_FIX.format(pkgs="latexmk"))]
    checks = [Check("tex", "latexmk", OK, f"latexmk {latexmk}")]
    if kpse is None:
        checks.append(Check("tex", "kpsewhich", FAIL, "kpsewhich not found: latexmk without a TeX "
                            "distribution cannot build the paper", TEX_FIX.format(pkgs="")))
        return checks
    missing = []
    for f in files:
        try:
            found = subprocess.run([kpse, f], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            found = ""
        if not found:
            missing.append(f)
    if missing:
        checks.append(Check("tex", "packages", FAIL,
                            f"paper/main.tex needs {', '.join(missing)}, not found by kpsewhich "
                            "(the `paper` job would fail)",
                            TEX_FIX.format(pkgs=" ".join(Path(m).stem for m in missing))))
    else:
        checks.append(Check("tex", "packages", OK, f"all {len(files)} classes and packages of "
                            "paper/main.tex found"))
    return checks


# --- SLURM ---------------------------------------------------------------------------------------

def _run(cmd: list[str], timeout: float = 10) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def check_slurm() -> tuple[list[Check], bool]:
    """(checks, a cluster answers)."""
    tools = {t: shutil.which(t) for t in ("sbatch", "sinfo", "squeue", "sacct")}
    if not (tools["sbatch"] and tools["sinfo"]):
        return [Check("slurm", "tools", INFO, "sbatch/sinfo not on PATH: no SLURM here (needed only for "
                      "--profile slurm)")], False
    checks = [Check("slurm", "tools", OK, "on PATH: " + ", ".join(t for t, p in tools.items() if p))]
    info = _run(["sinfo", "-h", "-o", "%P|%a|%D|%G"])
    if info is None or info.returncode != 0 or not info.stdout.strip():
        why = (info.stderr.strip().splitlines() or ["no answer"])[0] if info is not None else "timed out"
        checks.append(Check("slurm", "cluster", WARN, f"no SLURM cluster answers sinfo ({why})",
                            "start slurmctld/slurmd (a test cluster: `bash slurm/local/start_cluster.sh` as "
                            "root), or run without --profile slurm"))
        return checks, False
    parts = [line.split("|") for line in info.stdout.splitlines() if line.count("|") == 3]
    names = [p[0].rstrip("*") for p in parts]
    desc = ", ".join(f"{p[0]} ({p[1]}, {p[2]} nodes{', gres ' + p[3] if p[3] not in ('(null)', '') else ''})"
                     for p in parts)
    checks.append(Check("slurm", "cluster", OK, f"a cluster answers: partitions {desc}"))
    if tools["sacct"]:
        acct = _run(["sacct", "-n", "-X", "-S", "now", "-o", "JobID"])
        if acct is None or acct.returncode != 0:
            checks.append(Check("slurm", "sacct", WARN, "sacct fails (no accounting storage): the slurm "
                                "plugin's default status query does not work",
                                "add `slurm-status-command: squeue` to slurm/config.yaml"))
    try:
        import yaml

        prof = yaml.safe_load(CLUSTER_PROFILE.read_text()) or {}
        want = str((prof.get("default-resources") or {}).get("slurm_partition", ""))
    except Exception:
        want = ""
    if want and want not in names:
        checks.append(Check("slurm", "partition", WARN,
                            f"slurm/config.yaml submits to partition {want!r}, which this cluster does not "
                            f"have ({', '.join(names)})",
                            "set default-resources.slurm_partition in slurm/config.yaml to one of them"))
    return checks, True


# --- data ----------------------------------------------------------------------------------------

def suite_datasets(suite) -> list[str]:
    s = suite.spec
    targets = list(s.get("transfer", {}).get("targets", [])) if s.get("transfer", {}).get("enabled", True) else []
    return list(dict.fromkeys(list(s["datasets"]) + targets))


def _present(path: Path, folder: bool) -> bool:
    if not folder:
        return path.is_file()
    if not path.is_dir():
        return False
    with os.scandir(path) as it:
        return any(True for _ in it)


def check_data(suite) -> list[Check]:
    checks = []
    root = suite.data_root
    for d in suite_datasets(suite):
        if d in EMBEDDED:
            try:
                from dilt.data.digits import read_digits

                n = len(read_digits()[1])
                checks.append(Check("data", d, OK, f"{d}: built in ({EMBEDDED[d]}, {n} images)"))
            except Exception as e:  # scikit-learn missing or broken
                checks.append(Check("data", d, FAIL, f"{d}: scikit-learn's digits cannot be read ({e})", INSTALL))
            continue
        if d not in DATA_FILES:
            checks.append(Check("data", d, WARN, f"{d}: doctor knows no file list for this data set; its "
                                "loader checks its files when a job starts",
                                f"see the loader of {d!r} in dilt/data/"))
            continue
        paths, source = DATA_FILES[d]
        missing = []
        for p in paths:
            folder = p.endswith("/")
            full = root / p.rstrip("/")
            if _present(full, folder):
                checks.append(Check("data", d, OK, f"{d}: {full}{'/' if folder else ''} present"))
            else:
                missing.append(f"{full}{'/' if folder else ''}")
                checks.append(Check("data", d, FAIL, f"{d}: {full}{'/' if folder else ''} "
                                    f"{'missing or empty' if folder else 'missing'}", ""))
        if missing:  # one fix line for the data set, on its last missing file
            last = [c for c in checks if c.area == "data" and c.name == d and c.status == FAIL][-1]
            last.fix = f"get {source}; data_root is {root}/ (workflow config key `data_root`)"
    return checks


# --- disk ----------------------------------------------------------------------------------------

def _params(model: str, dataset: str, suite) -> int:
    import torch

    from dilt import config
    from dilt.models import build_model

    if dataset in getattr(config, "EMBEDDED_DATA", ("digits", "digits_rot")):
        classes, shape = 10, (1, 8, 8)
    else:
        size = ((suite.spec.get("dataset_options") or {}).get(dataset) or {}).get("image_size", 224)
        classes, shape = (getattr(config, "KNOWN_DATA", {}).get(dataset, (10, None))[0] or 10), (3, size, size)
    with torch.device("meta"):
        net = build_model(model, classes, shape, **{k: v for k, v in suite.model_options(model).items()
                                                      if k not in ("prune_first", "prune_head")})
    return sum(p.numel() for p in net.parameters())


def estimate_bytes(suite) -> int:
    """A rough upper estimate of what the suite writes under results_root: per seed and (model,
    data set), every IMP model-run keeps a mask (1 byte/weight) and float32 weights of every round
    (LTH one run, DiLT one per partition part, COLT one per part), other methods and the dense
    model a few weight files, plus one live epoch checkpoint (4x the weights) and 20% for records
    and logs."""
    s = suite.spec
    from dilt.methods import get_method
    from dilt.prune.magnitude import schedule

    rounds = len(schedule(s["sparsities"], float(s["prune"]["rate"])))
    parts = sum(p["n"] for p in s["partitions"])
    iterative = [get_method(m) for m in s["methods"] if get_method(m).kind == "iterative"]
    runs = sum(parts if m.on_partitions else 1 for m in iterative)  # IMP model runs kept on disk
    others = len(s["methods"]) - len(iterative)
    total = 0
    for model in s["models"]:
        for d in s["datasets"]:
            try:
                p = _params(model, d, suite)
            except Exception:
                p = 25_000_000   # a ResNet-50 when the model cannot be built here
            per_seed = runs * (rounds + 1) * 5 * p + (others + 1) * 2 * 4 * p + 4 * 4 * p
            total += per_seed * len(s["seeds"])
    return int(total * 1.2) + 50 * 2**20


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_disk(suite, disk_usage=shutil.disk_usage) -> list[Check]:
    where = suite.results_dir.resolve()
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = disk_usage(probe).free
    try:
        need = estimate_bytes(suite)
    except Exception as e:  # pragma: no cover - an unforeseen suite shape
        return [Check("disk", "free", WARN, f"free at {probe}: {_fmt(free)}; need unknown ({e})")]
    text = f"{_fmt(free)} free at {probe} (results in {suite.results_dir}); the suite writes roughly {_fmt(need)}"
    if free < need:
        return [Check("disk", "free", FAIL, text,
                      f"free {_fmt(need - free)} there, or point `results_root` at a bigger disk (a symbolic "
                      "link inside the repository, e.g. results -> /scratch/dilt-results)")]
    if free < 2 * need:
        return [Check("disk", "free", WARN, text + " (less than twice that)",
                      "a rerun after a config edit can hold old and new files side by side; leave room")]
    return [Check("disk", "free", OK, text)]


# --- all -----------------------------------------------------------------------------------------

def run_checks(config_path: str | Path = "workflow_config.yaml", suite_name: str | None = None,
               overrides=(), disk_usage=shutil.disk_usage) -> list[Check]:
    from dilt import config

    checks: list[Check] = []
    suite = None
    try:
        suite = config.load(config_path, suite_name, overrides=overrides)
        checks.append(Check("config", "config", OK, f"{config_path}: valid; suite {suite.name}"))
    except (config.ConfigError, OSError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        checks.append(Check("config", "config", FAIL, f"{config_path}: {msg}",
                            "fix the key named above (`python -m dilt validate` checks it again)"))
    checks += check_versions()
    slurm, cluster = check_slurm()
    checks += check_devices(suite, cluster)
    checks += check_tex()
    checks += slurm
    if suite is not None:
        checks += check_data(suite)
        checks += check_disk(suite, disk_usage)
    return checks


AREAS = {"config": "Config", "versions": "Versions", "devices": "Devices", "tex": "TeX (paper/main.tex)",
         "slurm": "SLURM", "data": "Data", "disk": "Disk"}


def report(checks: list[Check], suite_name: str | None = None) -> str:
    lines = []
    for area, title in AREAS.items():
        group = [c for c in checks if c.area == area]
        if not group:
            continue
        lines.append(f"{title}:")
        for c in group:
            lines.append(f"  {c.status:<4}  {c.detail}")
            if c.fix:
                lines.append(f"        fix: {c.fix}")
    fails = [c for c in checks if c.status == FAIL]
    warns = [c for c in checks if c.status == WARN]
    what = f"suite {suite_name}" if suite_name else "the suite"
    if fails:
        lines.append(f"{len(fails)} problem(s), {len(warns)} warning(s): {what} cannot run here until "
                     "the FAIL lines are fixed.")
    else:
        lines.append(f"ready: {what} can run here ({len(warns)} warning(s)).")
    return "\n".join(lines)


def main(args) -> int:
    """Entry point of ``python -m dilt doctor`` (``args``: --config, --suite, --configfile)."""
    checks = run_checks(args.config, args.suite, getattr(args, "configfile", []) or [])
    name = next((c.detail.rsplit("suite ", 1)[-1] for c in checks if c.area == "config" and c.status == OK),
                args.suite)
    print(report(checks, name))
    return 1 if any(c.status == FAIL for c in checks) else 0
