"""A third, tiny competition for tests/test_contract.py: a tabular binary task whose prediction column is
called ``target``. One package (this one) plus one registry line (the test's ``competitions.register``);
it declares only what it has: no sample, no archives, no submission options."""
