from signer_proxy.cli.main import main

raise SystemExit(main())
