"""Day 2: changing a running cluster without losing a request.

:mod:`hapair.day2.changes` is the pure half (what differs between the running spec and a new
one, what that needs, and the plan shown before anything is done); the lab carries it out in
:mod:`hapair.platforms.lab.day2`.

On AWS the LBs follow a desired document (:mod:`hapair.day2.desired`: its format and
validation); :mod:`hapair.day2.follow` decides how an LB goes from one version to the next
(runtime-API steps or a seamless reload) and when it polls, and :mod:`hapair.day2.runtime_apply`
carries that out on an HAProxy.
"""
