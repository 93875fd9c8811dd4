"""The dunning app's admin, split by subject. Each module declares its ModelAdmins whole and registers
each once; importing them here is what registers them (the admin imports ``dunning.admin``).

- cases: dunning cases (staff actions) and the timeline
- campaigns: campaigns (steps, variants, fee policy, retry timing, timeline preview) and pins
- workqueue: the staff work queue
- plans: payment plans and their limits
- fees: fees charged on invoices (waived with a reason)
- customers: customers (their personal data exported or erased through dunning.privacy)
"""

from dunning.admin import campaigns, cases, customers, fees, plans, workqueue  # noqa: F401
