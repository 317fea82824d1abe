"""Report templates (jinja2); shipped in the wheel as chromowatch.templates."""
