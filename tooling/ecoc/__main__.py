from ecoc.cli import main

raise SystemExit(main())
