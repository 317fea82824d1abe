"""The review web app (`chromowatch web`): samples, the review grid, reports; users and roles.

It reads and writes through the store only, so it runs beside the daemon on the same database.
"""
