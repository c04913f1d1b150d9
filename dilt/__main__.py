import sys

from dilt.forkserver import run_via_server

code = run_via_server(sys.argv[1:])  # a warm fork of the run's server, when there is one
if code is None:
    from dilt.cli import main

    code = main()
    from dilt import platform

    platform.exit_process(code)  # a DDP rank skips the interpreter's C++ teardown
raise SystemExit(code)
