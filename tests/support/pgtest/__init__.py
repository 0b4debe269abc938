"""Test support for popgate: a private Dovecot (dovecot), test mailboxes
(mailbox), the popgate process (popgate), real POP3 clients (clients),
byte-level POP3 helpers and a recording relay (wire), comparison helpers
(compare), and fake upstreams (fakes)."""
