from django.apps import AppConfig


class DunningConfig(AppConfig):
    name = "dunning"
    verbose_name = "Dunning"
    # Recurring jobs (core.schedules): name -> (function, minutes).
    schedules = {
        "Run due dunning steps": ("dunning.tasks.run_due_steps", 1),
        "Process pending payment attempts": ("dunning.tasks.process_payment_attempts", 1),
        "Send queued notifications": ("dunning.tasks.send_notifications", 1),
        "Send pre-dunning reminders": ("dunning.tasks.send_predunning_reminders", 60),
        "Charge due payment plan instalments": ("dunning.plans.charge_due_instalments", 15),
        # Idempotent (unique fee keys, interest recomputed): hourly so interest follows local midnight.
        "Apply late fees and interest": ("dunning.tasks.apply_fees", 60),
        "Remove old message bodies and tracking data": ("dunning.tasks.purge_old_messages", 1440),
    }
