"""The engine's promises under disorder: a randomized schedule-and-fault checker
(issue 17 item 6) and one named test per known defect.

Real parts where behaviour matters (a Valkey node and a replica, real Flask
workers from ``create_app`` driven through WSGI, redis-py under them), fakes
only for what is simulated (the database, the network's pauses and silences).

==================  ===============================================================
module              its one job
==================  ===============================================================
``adapter``         everything engine-specific (what the harness needs from the engine)
``chaos``           network faults under redis-py: pauses, holds, silence, death
``fakedb``          the database, counting queries per key on its own side
``valkey``          the node, its replica, and the server-side faults
``workers``         a worker (one app) and its requests, each one recorded
``history``         the recorded operations, on one monotonic clock
``schedule``        schedules as data, and Hypothesis' strategies for them
``runner``          runs a schedule: steps, faults, settle, final reads
``checkers``        one checker per promise over a history
``explore``         Hypothesis explores seeds and shrinks what breaks a promise
``test_checker``    the quick (unit) and long (``-m checker``) profiles
``test_defects_*``  one named test per defect of issue 17
==================  ===============================================================
"""
