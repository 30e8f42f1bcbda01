"""One module per sub-command (auto-discovered by ``clipvip_apps.cli``)."""
