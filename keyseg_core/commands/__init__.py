"""Subcommands of the `keyseg` CLI; see keyseg_core/cli.py for the contract."""
