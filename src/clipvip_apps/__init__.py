"""Applications on top of the ``clipvip`` library: the CLI, the trainer and the web app.

Rule: ``clipvip_apps`` imports ``clipvip``; ``clipvip`` never imports ``clipvip_apps``.
"""
