from pilotfish.cli.main import main

raise SystemExit(main())
