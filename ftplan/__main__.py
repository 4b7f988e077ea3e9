from ftplan.cli import main

raise SystemExit(main())
