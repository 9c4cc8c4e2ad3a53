"""Day 2: changing a running cluster without losing a request.

:mod:`hapair.day2.changes` is the pure half (what differs between the running spec and a new
one, what that needs, and the plan shown before anything is done); the lab carries it out in
:mod:`hapair.platforms.lab.day2`.
"""
