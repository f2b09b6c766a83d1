"""Benchmarks: `./dev bench`. Each prints Carebase's number next to this machine's ceiling
measured in the same run, and the ratio."""
