"""Artifact metadata: environment.yml and pyproject.toml declare the same packages with
compatible bounds (conda cannot run here, so this is the check), CITATION.cff and LICENSE are
valid, and the Snakemake report's captions are valid reStructuredText."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent

# conda-forge names that differ from the PyPI name; the interpreter and the installer are conda's
# own business (python's version is checked against requires-python instead).
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib", "pytorch-cpu": "torch"}
CONDA_ONLY = {"python", "pip"}


def norm(name: str) -> str:
    """PEP 503 normalised name (``Scikit_Learn`` -> ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def conda_spec(text: str) -> tuple[str, SpecifierSet]:
    """(normalised PyPI name, specifier) of a conda match spec such as ``python=3.11``,
    ``numpy>=1.26,<3`` or ``scipy=1.11.4=py311h``; conda's ``=X`` means ``X.*``."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", text)
    if not m:
        raise ValueError(f"unreadable conda dependency {text!r}")
    name, rest = norm(m.group(1)), m.group(2)
    name = CONDA_TO_PYPI.get(name, name)
    if not rest:
        return name, SpecifierSet()
    if re.fullmatch(r"=[^=<>!~,]+(=.*)?", rest):  # name=version[=build]
        version = rest[1:].split("=")[0]
        return name, SpecifierSet(f"=={version}" if version.endswith("*") else f"=={version}.*")
    return name, SpecifierSet(rest.replace(" ", ""))


def read_environment(text: str) -> dict:
    """conda: {name: spec}; pip: {name: spec}; extras: the extras of the ``-e .[...]`` line
    (None when the package itself is not installed); repeats: names declared twice."""
    env = yaml.safe_load(text)
    conda, pip, extras, repeats = {}, {}, None, []
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                local = re.fullmatch(r"(?:-e\s+)?\.(?:\[([^\]]*)\])?", line.strip())
                if local:
                    extras = {norm(e) for e in (local.group(1) or "").split(",") if e.strip()}
                    continue
                req = Requirement(line)
                repeats += [norm(req.name)] if norm(req.name) in pip else []
                pip[norm(req.name)] = req.specifier
        else:
            name, spec = conda_spec(str(dep))
            repeats += [name] if name in conda else []
            conda[name] = spec
    return {"conda": conda, "pip": pip, "extras": extras, "repeats": repeats}


def read_pyproject(text: str) -> dict:
    """core: {name: spec}; extras: {extra: {name: spec}}; python: requires-python."""
    project = tomllib.loads(text)["project"]

    def reqs(lines):
        return {norm(Requirement(r).name): Requirement(r).specifier for r in lines}

    return {"core": reqs(project.get("dependencies", [])),
            "extras": {norm(k): reqs(v) for k, v in project.get("optional-dependencies", {}).items()},
            "python": SpecifierSet(project.get("requires-python", ""))}


def _candidates(*specs: SpecifierSet) -> set[Version]:
    """Versions around every bound of ``specs``: enough to find a version both allow when one
    exists for the bounds a requirement list uses (==, ===, >=, <=, >, <, ~=, !=, X.*)."""
    out = {Version("0.0.1"), Version("99999")}
    for spec in specs:
        for s in spec:
            base = Version(s.version.rstrip(".*").rstrip("."))
            rel = list(base.release) + [0] * (3 - len(base.release))
            out.add(base)
            for i in range(3):
                up = rel[:i] + [rel[i] + 1] + [0] * (2 - i)
                out.add(Version(".".join(map(str, up))))
                if rel[i] > 0:
                    down = rel[:i] + [rel[i] - 1] + [999] * (2 - i)
                    out.add(Version(".".join(map(str, down))))
            out.add(Version(".".join(map(str, rel[:2] + [rel[2] + 1]))))
    return out


def compatible(a: SpecifierSet, b: SpecifierSet) -> bool:
    """Some release satisfies both ``a`` and ``b``."""
    return any(v in a and v in b for v in _candidates(a, b))


def _exact_pin(spec: SpecifierSet) -> str | None:
    pins = [s.version for s in spec if s.operator in ("==", "===") and not s.version.endswith("*")]
    return pins[0] if len(pins) == 1 else None


def parity_problems(env_text: str, pyproject_text: str) -> list[str]:
    """Every way environment.yml and pyproject.toml disagree, one line each (empty: in parity)."""
    env, py = read_environment(env_text), read_pyproject(pyproject_text)
    problems = [f"environment.yml declares {n} twice" for n in env["repeats"]]
    declared: dict[str, list[tuple[str, SpecifierSet]]] = {}
    for where, reqs in [("dependencies", py["core"])] + [
            (f"[{k}]", v) for k, v in py["extras"].items()]:
        for name, spec in reqs.items():
            declared.setdefault(name, []).append((where, spec))
    for name, specs in declared.items():  # one package, two declarations in pyproject
        for (w1, s1), (w2, s2) in itertools.pairwise(specs):
            if str(s1) != str(s2):
                problems.append(f"pyproject.toml: {name} is {s1 or 'unbounded'} in {w1} but "
                                f"{s2 or 'unbounded'} in {w2}")
    if env["extras"] is None:
        problems.append("environment.yml does not install the package itself (`-e .[...]` in its pip list)")
    else:
        for extra in sorted(set(py["extras"]) - env["extras"]):
            problems.append(f"environment.yml installs `.[{','.join(sorted(env['extras']))}]`: "
                            f"extra {extra!r} of pyproject.toml (and its packages) is missing")
        for extra in sorted(env["extras"] - set(py["extras"])):
            problems.append(f"environment.yml asks for extra {extra!r}, which pyproject.toml lacks")
    explicit = {**{k: v for k, v in env["conda"].items() if k not in CONDA_ONLY}, **env["pip"]}
    for name, spec in sorted(explicit.items()):
        if name not in declared:
            problems.append(f"environment.yml lists {name} ({spec or 'unbounded'}), which "
                            "pyproject.toml does not declare")
            continue
        for where, want in declared[name]:
            pin = _exact_pin(want)
            if pin is not None and str(spec) and _exact_pin(spec) != pin:
                problems.append(f"{name}: pyproject.toml {where} pins =={pin}, environment.yml "
                                f"says {spec}")
            elif not compatible(spec, want):
                problems.append(f"{name}: environment.yml {spec} contradicts pyproject.toml "
                                f"{where} {want}")
    if "python" in env["conda"] and str(py["python"]):
        spec = env["conda"]["python"]
        if not compatible(spec, py["python"]):
            problems.append(f"python: environment.yml {spec} contradicts requires-python {py['python']}")
    return problems


ENV = (ROOT / "environment.yml").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def test_environment_and_pyproject_are_in_parity():
    assert parity_problems(ENV, PYPROJECT) == []


def test_environment_installs_what_ci_installs():
    """The conda route and the pip route (CI, the README's quick start) install the same extras."""
    env_extras = read_environment(ENV)["extras"]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_extras = re.findall(r"pip install[^\n]*?-e\s+'?\.\[([^\]]+)\]", ci)
    assert ci_extras, "no `pip install -e .[...]` in .ci/run"
    for found in ci_extras:
        assert {norm(e) for e in found.split(",")} == env_extras


def test_conda_python_satisfies_requires_python():
    env, py = read_environment(ENV), read_pyproject(PYPROJECT)
    spec = env["conda"]["python"]
    floor = min(Version(s.version.rstrip(".*").rstrip(".")) for s in spec)
    assert floor in py["python"] and compatible(spec, py["python"])


PY_TOML = textwrap.dedent('''
    [project]
    name = "x"
    requires-python = ">=3.10"
    dependencies = ["torch==2.14.1", "numpy>=1.26", "pandas>=2.1"]
    [project.optional-dependencies]
    workflow = ["snakemake>=9,<10"]
    test = ["pytest>=8", "snakemake>=9,<10"]
''')


def _env(*lines, conda=("python=3.11", "pip")) -> str:
    return yaml.safe_dump({"name": "x", "channels": ["conda-forge"],
                           "dependencies": [*conda, {"pip": list(lines)}]})


def test_checker_accepts_a_consistent_pair():
    assert parity_problems(_env("torch==2.14.1", "-e .[workflow,test]"), PY_TOML) == []
    assert parity_problems(_env("-e .[test,workflow]", conda=("python=3.12", "pip", "numpy>=2")),
                           PY_TOML) == []


@pytest.mark.parametrize("env, pyproject, needle", [
    (_env("torch==2.13.0", "-e .[workflow,test]"), PY_TOML,
     "torch: pyproject.toml dependencies pins ==2.14.1, environment.yml says ==2.13.0"),
    (_env("torch>=2", "-e .[workflow,test]"), PY_TOML, "pins ==2.14.1, environment.yml says >=2"),
    (_env("-e .[workflow,test]", conda=("python=3.11", "pip", "numpy<1.20")), PY_TOML,
     "numpy: environment.yml <1.20 contradicts pyproject.toml dependencies >=1.26"),
    (_env("-e .[workflow]"), PY_TOML, "extra 'test' of pyproject.toml (and its packages) is missing"),
    (_env("torch==2.14.1"), PY_TOML, "does not install the package itself"),
    (_env("-e .[workflow,test]", "seaborn>=0.13"), PY_TOML,
     "environment.yml lists seaborn (>=0.13), which pyproject.toml does not declare"),
    (_env("-e .[workflow,test]", conda=("python=3.9", "pip")), PY_TOML,
     "python: environment.yml ==3.9.* contradicts requires-python >=3.10"),
    (_env("-e .[workflow,test]", conda=("python=3.11", "pip", "pytorch=2.13")), PY_TOML,
     "torch: pyproject.toml dependencies pins ==2.14.1, environment.yml says ==2.13.*"),
    (_env("-e .[workflow,test]"), PY_TOML.replace('test = ["pytest>=8", "snakemake>=9,<10"]',
                                                  'test = ["pytest>=8", "snakemake>=8"]'),
     "pyproject.toml: snakemake is <10,>=9 in [workflow] but >=8 in [test]"),
])
def test_checker_names_each_disagreement(env, pyproject, needle):
    problems = parity_problems(env, pyproject)
    assert any(needle in p for p in problems), problems


def test_compatible_finds_overlaps_and_contradictions():
    S = SpecifierSet
    assert compatible(S(">=9,<10"), S(">=9.5"))
    assert compatible(S("==3.11.*"), S(">=3.10"))
    assert not compatible(S(">=1.0"), S("<1.0"))
    assert not compatible(S("==2.14.1"), S("<2.14"))
    assert not compatible(S(">=2,<3"), S(">=3"))


# ---------------------------------------------------------------- citation and licence

def test_citation_cff_is_valid_cff_1_2():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors"):
        assert key in cff, key
    assert cff["cff-version"] == "1.2.0"
    project = tomllib.loads(PYPROJECT)["project"]
    assert str(cff["version"]) == project["version"]
    assert cff["license"] == project["license"]["text"] == "MIT"
    for person in cff["authors"] + cff["preferred-citation"]["authors"]:
        assert person.get("family-names") and person.get("given-names") or person.get("name")
    pc = cff["preferred-citation"]
    assert pc["type"] == "article" and pc["title"] and len(pc["authors"]) == 3
    assert {a["family-names"] for a in pc["authors"]} == {"Nasif", "Jahin", "Mridha"}


def test_license_is_mit_with_the_holder():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the dilt authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text


# ---------------------------------------------------------------- report captions

CAPTIONS = ROOT / "report"


def _render(path: Path) -> str:
    """The caption as Snakemake renders it: Jinja2 (with a stand-in `snakemake.config`), then
    docutils to HTML; any docutils warning fails (halt_level 2)."""
    import jinja2
    from docutils.core import publish_parts

    class Snakemake:
        config: ClassVar[dict] = {"suite": "smoke"}

    text = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        path.read_text()).render(snakemake=Snakemake, categories={}, files={})
    return publish_parts(text, writer="html",
                         settings_overrides={"halt_level": 2, "report_level": 2,
                                             "warning_stream": False})["body"]


def _report_outputs() -> dict[str, list[str]]:
    """Table and figure names of the workflow (TABLES and FIGURES in rules/common.smk)."""
    text = (ROOT / "rules" / "common.smk").read_text()
    names = {}
    for kind, var in (("tables", "TABLES"), ("figures", "FIGURES")):
        m = re.search(var + r" = \[.*?\((.*?)\)", text, re.DOTALL)
        names[kind] = re.findall(r'"([a-z0-9_]+)"', m.group(1))
    return names


def test_every_table_and_figure_has_a_caption():
    names = _report_outputs()
    assert len(names["tables"]) >= 6 and len(names["figures"]) >= 5
    for kind, items in names.items():
        have = {p.stem for p in (CAPTIONS / kind).glob("*.rst")}
        assert have == set(items), (kind, have ^ set(items))
    for name in ("workflow", "results", "imp_rounds", "config", "versions", "paper"):
        assert (CAPTIONS / f"{name}.rst").is_file(), name


@pytest.mark.parametrize("path", sorted(CAPTIONS.rglob("*.rst")), ids=lambda p: p.stem)
def test_caption_is_valid_rst_and_says_how_to_read(path):
    html = _render(path)
    assert len(html) > 200
    if path.parent.name in ("tables", "figures"):
        assert "How to read it" in path.read_text()
    if path.stem == "workflow":
        assert "smoke" in html  # the suite name comes from the config


def test_snakemake_report_renders_the_captions(tmp_path):
    """A one-rule workflow whose output carries a real caption through the wrapper proposed for
    rules/report.smk (a function: Snakemake's parser rejects a multi-line `report(...)` whose
    continuation line starts with `keyword=`), built and turned into a report zip."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f'''
        import os
        configfile: "c.yaml"
        report: {str(CAPTIONS / "workflow.rst")!r}


        def reported(paths, kind):
            flagged = []
            for p in paths:
                name, ext = os.path.splitext(os.path.basename(p))
                flagged.append(report(p, caption=os.path.join({str(ROOT)!r}, "report", kind, name + ".rst"),
                                      category=kind.capitalize(), subcategory="Claims",
                                      labels={{"name": name, "format": ext[1:]}}))
            return flagged


        rule all:
            input: "tables/claims.tex"


        rule tables:
            output: reported(["tables/claims.tex"], "tables")
            shell: "echo x > {{output}}"
    '''))
    (tmp_path / "c.yaml").write_text("suite: smoke\n")
    r = subprocess.run([sys.executable, "-m", "snakemake", "all", "--cores", "1"], cwd=tmp_path,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "snakemake", "--report", "report.zip"], cwd=tmp_path,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    import zipfile

    with zipfile.ZipFile(tmp_path / "report.zip") as z:
        html = z.read("report/report.html").decode()
    assert "<em>Paired difference</em> is the mean over seeds" in html  # the caption, rendered
    assert "claims.tex" in html and "smoke" in html
