from tiltflow.cli import main

raise SystemExit(main())
