# dilt workflow: `snakemake --cores all` runs the suite named in workflow_config.yaml.
# Stages (rules/*.smk): init -> dense, find (every registered method; DiLT one job per
# partition) -> tickets -> retrain / transfer / analyze -> report (results.csv, tables,
# figures, paper). Nothing is written while the workflow is parsed (dry runs change nothing).
import os
import shutil
import sys

from snakemake.utils import min_version

min_version("9.0")

configfile: "workflow_config.yaml"

sys.path.insert(0, workflow.basedir)
from dilt import provenance as PROV, workflow as W
from dilt.config import ConfigError, Suite, validate as dilt_validate
from dilt.methods import get_method, method_names


def _validated(config):
    """Validate the config before any job runs: one line naming the key, then stop. The files
    are also read again with dilt's strict loader (duplicated keys, templates), merged the way
    Snakemake merged them."""
    from dilt.config import merged

    try:
        files = [str(f) for f in workflow.overwrite_configfiles]
        dilt_validate(merged(os.path.join(workflow.basedir, "workflow_config.yaml"), files))
        return dilt_validate(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


CFG = _validated(config)
SUITE = CFG["suite"]
S = CFG["suites"][SUITE]
SUITE_OBJ = Suite(SUITE, S, CFG)
R = f"{CFG['results_root']}/{SUITE}"
LOGS = f"logs/{SUITE}"
TAGS = W.tags(S)
NPART = {f"{p['scheme']}{p['n']}": p["n"] for p in S["partitions"]}
TARGETS = W.transfer_targets(S)
HAVE_TEX = shutil.which("latexmk") is not None

include: "rules/common.smk"
include: "rules/prune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"

# the report steps and the resolved config are seconds of CPU work: never queue them
localrules: all, resolved_config, results, tables, figures, paper


rule all:
    default_target: True
    input:
        rules.tables.output,
        rules.figures.output,
        PAPER_PDF if HAVE_TEX else [],


if not HAVE_TEX:
    print(f"note: latexmk not found, so paper/{SUITE}/main.pdf is skipped (everything else is "
          "built); install TeX with `apt-get install latexmk texlive-latex-recommended "
          "texlive-latex-extra texlive-pictures texlive-science` and run `snakemake paper`.",
          file=sys.stderr)
