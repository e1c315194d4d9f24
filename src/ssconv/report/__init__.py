"""Reports: pattern pictures, result tables and plots."""
