"""The support portal's closed lists that the command line offers before anything heavy is
imported (``ffc-agent tickets task --help`` lists the task types without loading pydantic or
numpy). ``rma.tickets`` uses them in the ticket's model."""

from __future__ import annotations

import enum


class TaskType(enum.StrEnum):
    """The type of one line of a ticket's task list, as the portal names it."""

    SUPPORT_OPERATION = "support operation"
    SOFTWARE_NOTE = "software note"
    BUSINESS_NOTE = "business note"
    CUSTOMER_REQUEST = "customer request"
    FIRMWARE_NOTE = "firmware note"
    INTERNAL_NOTE = "internal note"
