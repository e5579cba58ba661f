"""Subcommands of the `keyseg` CLI; see keyseg_core/cli/app.py for the contract."""
