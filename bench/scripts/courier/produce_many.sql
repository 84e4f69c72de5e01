-- Scenario 9: one message per transaction into one of 1,000 queues, at random.
\set q random(1, 1000)
SELECT courier.enqueue('m' || :q, '@PAYLOAD@');
