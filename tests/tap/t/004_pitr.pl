# Point-in-time recovery: a base backup restored with WAL replay to a target time holds the queue
# as it was at that time. Every message enqueued and committed before the target is there (unless
# acked before it), nothing enqueued after it is; acks and leases after it are undone; leases taken
# before it are restored with their receipts and expiries, expire, and are delivered again with
# the next attempt, their old receipts refused.
use strict;
use warnings FATAL => 'all';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(has_archiving => 1, allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'courier'");
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION courier;
	SELECT courier.create_queue('t', visibility_timeout => '1 hour');
	SELECT courier.enqueue('t', '0');
});
$primary->backup('b');

# Before the target: ten messages, two of them acked, three leased for 12 seconds.
$primary->safe_psql('postgres', q{
	SELECT courier.enqueue_batch('t', array_agg(to_jsonb(i))) FROM generate_series(1, 10) i;
	SELECT courier.ack(receipt) FROM courier.lease('t', 3) WHERE payload::int IN (0, 1, 2);
});
my @before_lease = split /\n/, $primary->safe_psql('postgres', q{
	SELECT payload::text || '|' || receipt || '|' || attempt || '|' || lease_expires_at
	FROM courier.lease('t', 3, visibility_timeout => '12 seconds') ORDER BY payload::int});
is(scalar @before_lease, 3, 'three messages leased before the target');
my %lease1 = map { my @f = split /\|/; ($f[0] => { receipt => $f[1], attempt => $f[2], expires => $f[3] }) } @before_lease;
is(join(',', sort keys %lease1), '3,4,5', 'the leased messages are 3, 4 and 5');

sleep 0.3;
my $target = $primary->safe_psql('postgres', 'SELECT clock_timestamp()');
sleep 0.3;

# After the target: more messages, an ack of a leased one, more leases.
$primary->safe_psql('postgres', q{
	SELECT courier.enqueue_batch('t', array_agg(to_jsonb(i))) FROM generate_series(101, 105) i;
});
is($primary->safe_psql('postgres', qq{SELECT courier.ack('$lease1{3}{receipt}')}), 't',
	'message 3 acked after the target');
my @after_lease = split /\n/, $primary->safe_psql('postgres',
	q{SELECT payload::text || '|' || receipt FROM courier.lease('t', 2) ORDER BY payload::int});
my %lease2 = map { my @f = split /\|/; ($f[0] => $f[1]) } @after_lease;
is(join(',', sort keys %lease2), '6,7', 'messages 6 and 7 leased after the target');

# Every WAL segment up to now archived, then the primary is gone.
my $last = $primary->safe_psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_lsn())');
$primary->safe_psql('postgres', 'SELECT pg_switch_wal()');
$primary->poll_query_until('postgres', "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")
  or die 'the WAL was not archived';
$primary->stop('immediate');

my $restored = PostgreSQL::Test::Cluster->new('restored');
$restored->init_from_backup($primary, 'b', has_restoring => 1);
$restored->append_conf('postgresql.conf', qq{
recovery_target_time = '$target'
recovery_target_action = 'promote'
});
$restored->start;
$restored->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the restore did not reach its target';
ok(1, "restored to $target and promoted");

# The messages as at the target: 3..10 (0, 1, 2 were acked before it; 101..105 came after).
is($restored->safe_psql('postgres', q{
	SELECT string_agg(m.payload::text, ',' ORDER BY m.payload::int)
	FROM courier.message m JOIN courier.queue q USING (queue_id) WHERE q.name = 't'}),
	'3,4,5,6,7,8,9,10', 'every message committed before the target is there, none after it');

# The leases taken before the target hold, with their attempt and expiry; those after are undone.
for my $v (3, 4, 5)
{
	is($restored->safe_psql('postgres', qq{
		SELECT attempt || '|' || leased_until FROM courier.message WHERE payload = '$v'}),
		"$lease1{$v}{attempt}|$lease1{$v}{expires}", "message $v is in flight under its lease from before the target");
}
is($restored->safe_psql('postgres', q{
	SELECT string_agg(attempt || ':' || (leased_until IS NULL), ',' ORDER BY payload::int)
	FROM courier.message WHERE payload::int IN (6, 7)}),
	'0:true,0:true', 'the leases of 6 and 7, taken after the target, are undone');
is($restored->safe_psql('postgres', q{SELECT ready, in_flight FROM courier.stats('t')}), '5|3',
	'stats: 5 ready, 3 in flight');

# Leases now: 6..10 first (6 and 7 with attempt 1 again), then 3, 4 and 5 once their restored
# leases have expired, with attempt 2. (When the restore itself outlasted the leases, one lease
# gets all of them.)
my $lease_all = q{SELECT string_agg(payload::text || ':' || attempt, ',' ORDER BY payload::int)
	FROM courier.lease('t', 10, visibility_timeout => '1 hour')};
my $before_expiry = $restored->safe_psql('postgres',
	qq{SELECT clock_timestamp() < '$lease1{3}{expires}'::timestamptz - interval '1 second'});
if ($before_expiry eq 't')
{
	is($restored->safe_psql('postgres', $lease_all), '6:1,7:1,8:1,9:1,10:1',
		'the ready messages are delivered, 6 and 7 again with attempt 1; 3, 4, 5 are still leased');
	my $wait = $restored->safe_psql('postgres',
		qq{SELECT greatest(0, extract(epoch FROM '$lease1{5}{expires}'::timestamptz - clock_timestamp()))});
	sleep($wait + 0.2);
	is($restored->safe_psql('postgres', $lease_all), '3:2,4:2,5:2',
		'the leases from before the target expire and 3, 4, 5 are delivered again, attempt 2');
}
else
{
	note 'the restore took longer than the leases from before the target: they had expired';
	is($restored->safe_psql('postgres', $lease_all), '3:2,4:2,5:2,6:1,7:1,8:1,9:1,10:1',
		'3, 4, 5 delivered again with attempt 2, the others with attempt 1');
}
is($restored->safe_psql('postgres', qq{SELECT courier.ack('$lease2{6}')}), 'f',
	'a receipt from a lease after the target does not ack');
is($restored->safe_psql('postgres', qq{SELECT courier.ack('$lease1{4}{receipt}')}), 'f',
	'the old receipt of a redelivered message does not ack');

$restored->stop;
done_testing();
