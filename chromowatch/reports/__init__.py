"""Reports: what a sample's numbers are (stats), shown (HTML, PDF), mailed, exported."""
