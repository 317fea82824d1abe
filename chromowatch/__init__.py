"""chromowatch: scores sister-chromatid cohesion (class A/B/C) on metaphase spreads."""

__version__ = "0.1.0"
