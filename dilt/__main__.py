from dilt.cli import main

raise SystemExit(main())
