from recsys_dashboard.launcher import main

raise SystemExit(main())
