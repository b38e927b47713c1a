from signer_proxy.cli import main

raise SystemExit(main())
