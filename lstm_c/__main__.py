from lstm_c._cli.main import main

raise SystemExit(main())
