from mediajobs.cli import main

raise SystemExit(main())
