from ccvae.cli import entry

entry()
