"""FIX 4.4 vocabulary used by the adapter: tag numbers, message types and the enumerated values
of the fields we read or write. Only what the adapter speaks; nothing here has behaviour."""

from __future__ import annotations

from enum import IntEnum, StrEnum

BEGIN_STRING = "FIX.4.4"


class Tag(IntEnum):
    # standard header and trailer
    BEGIN_STRING = 8
    BODY_LENGTH = 9
    MSG_TYPE = 35
    SENDER_COMP_ID = 49
    TARGET_COMP_ID = 56
    MSG_SEQ_NUM = 34
    SENDING_TIME = 52
    POSS_DUP_FLAG = 43
    POSS_RESEND = 97
    ORIG_SENDING_TIME = 122
    CHECK_SUM = 10
    # session messages
    ENCRYPT_METHOD = 98
    HEART_BT_INT = 108
    RESET_SEQ_NUM_FLAG = 141
    USERNAME = 553
    PASSWORD = 554
    TEST_REQ_ID = 112
    BEGIN_SEQ_NO = 7
    END_SEQ_NO = 16
    NEW_SEQ_NO = 36
    GAP_FILL_FLAG = 123
    REF_SEQ_NUM = 45
    REF_TAG_ID = 371
    REF_MSG_TYPE = 372
    SESSION_REJECT_REASON = 373
    TEXT = 58
    # orders and executions
    ACCOUNT = 1
    AVG_PX = 6
    CL_ORD_ID = 11
    COMMISSION = 12
    COMM_TYPE = 13
    CUM_QTY = 14
    EXEC_ID = 17
    LAST_PX = 31
    LAST_QTY = 32
    ORDER_ID = 37
    ORDER_QTY = 38
    ORD_STATUS = 39
    ORD_TYPE = 40
    ORIG_CL_ORD_ID = 41
    PRICE = 44
    SIDE = 54
    SYMBOL = 55
    TIME_IN_FORCE = 59
    TRANSACT_TIME = 60
    LAST_MKT = 30
    STOP_PX = 99
    CXL_REJ_REASON = 102
    ORD_REJ_REASON = 103
    EXEC_TYPE = 150
    LEAVES_QTY = 151
    CXL_REJ_RESPONSE_TO = 434
    ORD_STATUS_REQ_ID = 790
    BUSINESS_REJECT_REF_ID = 379
    BUSINESS_REJECT_REASON = 380


#: Header and trailer tags: never part of a message's body (a resend rebuilds the header).
HEADER_TAGS = frozenset(
    {
        Tag.BEGIN_STRING,
        Tag.BODY_LENGTH,
        Tag.MSG_TYPE,
        Tag.SENDER_COMP_ID,
        Tag.TARGET_COMP_ID,
        Tag.MSG_SEQ_NUM,
        Tag.SENDING_TIME,
        Tag.POSS_DUP_FLAG,
        Tag.POSS_RESEND,
        Tag.ORIG_SENDING_TIME,
        Tag.CHECK_SUM,
    }
)


class MsgType(StrEnum):
    HEARTBEAT = "0"
    TEST_REQUEST = "1"
    RESEND_REQUEST = "2"
    REJECT = "3"
    SEQUENCE_RESET = "4"
    LOGOUT = "5"
    LOGON = "A"
    EXECUTION_REPORT = "8"
    ORDER_CANCEL_REJECT = "9"
    NEW_ORDER_SINGLE = "D"
    ORDER_CANCEL_REQUEST = "F"
    ORDER_STATUS_REQUEST = "H"
    BUSINESS_MESSAGE_REJECT = "j"

    @property
    def is_admin(self) -> bool:
        """Session-level (administrative) message: never resent, always gap-filled."""
        return self in _ADMIN


_ADMIN = frozenset(
    {
        MsgType.HEARTBEAT,
        MsgType.TEST_REQUEST,
        MsgType.RESEND_REQUEST,
        MsgType.REJECT,
        MsgType.SEQUENCE_RESET,
        MsgType.LOGOUT,
        MsgType.LOGON,
    }
)

ADMIN_MSG_TYPES: frozenset[str] = frozenset(str(t) for t in _ADMIN)


class ExecType(StrEnum):
    NEW = "0"
    PARTIAL_FILL = "1"  # FIX 4.2 and earlier; some 4.4 counterparties still send it
    FILL = "2"  # idem
    DONE_FOR_DAY = "3"
    CANCELED = "4"
    REPLACED = "5"
    PENDING_CANCEL = "6"
    STOPPED = "7"
    REJECTED = "8"
    SUSPENDED = "9"
    PENDING_NEW = "A"
    CALCULATED = "B"
    EXPIRED = "C"
    RESTATED = "D"
    PENDING_REPLACE = "E"
    TRADE = "F"
    TRADE_CORRECT = "G"
    TRADE_CANCEL = "H"
    ORDER_STATUS = "I"


#: ExecTypes that report an execution (LastQty/LastPx).
FILL_EXEC_TYPES = frozenset({ExecType.TRADE, ExecType.PARTIAL_FILL, ExecType.FILL})


class OrdStatus(StrEnum):
    NEW = "0"
    PARTIALLY_FILLED = "1"
    FILLED = "2"
    DONE_FOR_DAY = "3"
    CANCELED = "4"
    REPLACED = "5"
    PENDING_CANCEL = "6"
    STOPPED = "7"
    REJECTED = "8"
    SUSPENDED = "9"
    PENDING_NEW = "A"
    CALCULATED = "B"
    EXPIRED = "C"
    ACCEPTED_FOR_BIDDING = "D"
    PENDING_REPLACE = "E"


#: OrdRejReason (103) "Unknown order": the answer to a status request for an order never seen.
ORD_REJ_UNKNOWN_ORDER = "5"

#: CommType (13).
COMM_TYPE_PER_UNIT = "1"
COMM_TYPE_PERCENT = "2"
COMM_TYPE_ABSOLUTE = "3"

#: SessionRejectReason (373) values we send.
REJECT_VALUE_INCORRECT = "5"
REJECT_COMP_ID_PROBLEM = "9"
