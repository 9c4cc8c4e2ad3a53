"""Day-2 operations on a running lab: scale, apply, restart, certificate rotation.

Each works on a :class:`~hapair.platforms.lab.day2.target.Target` (the running lab, locked
against a second day-2 operation at the same time) and reports progress as it goes.
"""
