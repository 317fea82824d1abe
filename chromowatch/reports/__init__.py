"""Reports: what a sample's numbers are, shown (HTML, PDF), versioned, mailed and exported.

data (what a report shows, read through the store; statistics from stats) -> render (the
HTML, with charts and assets) -> pdf (the child process that turns it into PDF). publish
numbers the versions the daemon keeps and queues their mail (mail); export writes CSV/JSON
from data; tables formats the terminal's counts table.
"""
