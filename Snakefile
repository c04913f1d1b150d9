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


report: "report/workflow.rst"  # `snakemake --report report.zip`: captions under report/


sys.path.insert(0, workflow.basedir)
from dilt import provenance as PROV, workflow as W
from dilt.config import RESOURCE_STAGES, Suite, validated_or_exit
from dilt.methods import get_method, method_names, ticket_method

# the config, validated before any job (one line naming the key, then stop)
CFG = validated_or_exit(config, workflow.basedir, workflow.overwrite_configfiles)
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
localrules:
    all,
    resolved_config,
    results,
    tables,
    figures,
    paper,
    versions,


rule all:
    default_target: True
    input:
        rules.tables.output,
        rules.figures.output,
        PAPER_PDF if HAVE_TEX else [],
        rules.versions.output,
        RESOLVED,


# a local run's jobs fork from one warm interpreter (dilt/forkserver.py) instead of each starting
# Python and importing torch; cluster jobs, and `DILT_FORKSERVER=0`, start fresh processes
FORKSERVER = {"path": None}


onstart:
    from dilt import forkserver

    FORKSERVER["path"] = forkserver.start_for_run(
        workflow.basedir, f"{LOGS}/forkserver.log", workflow.local_exec
    )


onsuccess:
    from dilt import forkserver

    forkserver.stop(FORKSERVER["path"])


onerror:
    from dilt import forkserver

    forkserver.stop(FORKSERVER["path"])


if not HAVE_TEX:
    print(
        f"note: latexmk not found, so paper/{SUITE}/main.pdf is skipped (everything else is "
        "built); install TeX with `apt-get install latexmk texlive-latex-recommended "
        "texlive-latex-extra texlive-pictures texlive-science` and run `snakemake paper`.",
        file=sys.stderr,
    )
