from ccvae.cli import main

raise SystemExit(main())
