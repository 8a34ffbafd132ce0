"""A FIX 4.4 broker adapter (initiator): session layer of our own over simplefix framing, with
sequence numbers and sent messages kept in PostgreSQL (see `adapter` for the contract)."""

from adapters.fix.adapter import FixBroker, build_fix_broker
from adapters.fix.codec import FrameDecoder, GarbledMessage, Message, encode_message, parse_frame
from adapters.fix.config import CommissionReporting, FixConfig, FixTimeouts
from adapters.fix.resend import GapFill, Resend, StoredMessage, plan_resend
from adapters.fix.sequencer import InboundSequencer, Verdict
from adapters.fix.session import FixSession
from adapters.fix.store import DuplicateNewOrder, FixStore, SessionConflict, StoreUnavailable

__all__ = [
    "CommissionReporting",
    "DuplicateNewOrder",
    "FixBroker",
    "FixConfig",
    "FixSession",
    "FixStore",
    "FixTimeouts",
    "FrameDecoder",
    "GapFill",
    "GarbledMessage",
    "InboundSequencer",
    "Message",
    "Resend",
    "SessionConflict",
    "StoreUnavailable",
    "StoredMessage",
    "Verdict",
    "build_fix_broker",
    "encode_message",
    "parse_frame",
    "plan_resend",
]
