# A promoted standby starts with fresh shared memory: its counters count from zero, it has no
# scan floors (none is learned during recovery, where the primary's writes in progress cannot be
# seen), its waiting leases are woken by its own first commits, and its vacuum worker runs on the
# first acks. Each is checked within the first seconds after the promotion.
use strict;
use warnings FATAL => 'all';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'courier'
courier.vacuum_threshold = 200
courier.vacuum_naptime = 1
# Only courier's own worker vacuums, so its runs can be counted.
autovacuum = off
});
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION courier;
	SELECT courier.create_queue('p');
	SELECT courier.create_queue('f');
	SELECT courier.create_queue('w');
	SELECT courier.enqueue_batch('p', ARRAY['1','2','3','4','5']::jsonb[]);
	SELECT courier.ack(receipt) FROM courier.lease('p', 5);
});
is($primary->safe_psql('postgres', q{SELECT enqueued_total, acked_total FROM courier.stats('p')}),
	'5|5', 'the primary counted its enqueues and acks');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

# Scan floors. An enqueue into 'f' stays uncommitted on the primary while a later one commits;
# the standby, asked for stats meanwhile, sees only the later message. Were it to learn a floor
# from that, the floor would pass the earlier message, which the primary then commits, and it
# would still be in the promoted node's shared memory: leases there would skip the message.
my $early = $primary->background_psql('postgres');
$early->query_safe('BEGIN');
$early->query_safe(q{SELECT courier.enqueue('f', '"early"')});
$primary->safe_psql('postgres', q{SELECT courier.enqueue('f', '"late"')});
$primary->wait_for_catchup($standby);
for (1 .. 4)
{
	is($standby->safe_psql('postgres', q{SELECT ready FROM courier.stats('f')}), '1',
		'the standby sees the committed message only');
	sleep 0.15;    # past the floor learning interval (100 ms)
}
$early->query_safe('COMMIT');
$early->quit;
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', q{SELECT ready FROM courier.stats('f')}), '2',
	'once the earlier enqueue is replayed, the standby counts both messages');

# The failover.
$primary->stop('immediate');
my $t_promote = time;
$standby->promote;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f', 'promoted');
my $node = $standby;

is($node->safe_psql('postgres', q{SELECT string_agg(payload #>> '{}', ',' ORDER BY payload #>> '{}') FROM courier.lease('f', 10)}),
	'early,late', 'the first lease on the promoted node finds both messages: no floor passed the earlier one');
note sprintf('first lease %.2f s after the promotion began', time - $t_promote);

# Counters start from zero on the promoted node.
is($node->safe_psql('postgres', q{SELECT coalesce(enqueued_total, 0), coalesce(acked_total, 0) FROM courier.stats('p')}),
	'0|0', "the promoted node's counters do not include the old primary's");
$node->safe_psql('postgres', q{
	SELECT courier.enqueue_batch('p', ARRAY['6','7','8']::jsonb[]);
	SELECT courier.ack(receipt) FROM courier.lease('p', 3);
});
is($node->safe_psql('postgres', q{SELECT enqueued_total, leased_total, acked_total FROM courier.stats('p')}),
	'3|3|3', 'they count from the promotion on');
is($node->safe_psql('postgres', q{SELECT counters_since >= pg_postmaster_start_time() FROM courier.stats('p')}),
	't', 'counters_since is not older than the node');

# A waiting lease is woken by the promoted node's first commit, at once, by an event.
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_safe("SET application_name = 'courier_waiter'");
$waiter->query_until(qr/started/,
	"\\echo started\nSELECT 'got ' || payload::text FROM courier.lease('w', wait => '20 seconds');\n");
my $deadline = time + 10;
while (time < $deadline
	&& $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'courier_waiter' AND wait_event_type = 'Extension'}) ne '1')
{
	sleep 0.02;
}
my $t_commit = time;
$node->safe_psql('postgres', q{SELECT courier.enqueue('w', '"wake"')});
my $got = '';
while (time - $t_commit < 10)
{
	$waiter->{run}->pump_nb();
	last if $waiter->{stdout} =~ /got "wake"/;
	sleep 0.005;
}
my $latency = time - $t_commit;
like($waiter->{stdout}, qr/got "wake"/, 'the waiting lease got the message');
cmp_ok($latency, '<', 1.0, 'woken within a second of the commit');
note sprintf('waiter woken %.1f ms after the enqueue returned', $latency * 1000);
$waiter->{stdout} = '';
like($waiter->query_safe('SELECT wakeups >= 1, event_driven FROM courier._last_wait()'), qr/^t\|t/m,
	'woken by the commit, not by polling');
$waiter->quit;

# The vacuum worker: 300 acks pass courier.vacuum_threshold (200); it runs within seconds.
my $before = $node->safe_psql('postgres',
	q{SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = 'courier' AND relname = 'message'});
$node->safe_psql('postgres', q{
	SELECT courier.enqueue_batch('p', array_agg(to_jsonb(i))) FROM generate_series(1, 300) i;
	SELECT courier.ack_batch(array_agg(receipt)) FROM courier.lease('p', 300);
});
my $vacuumed = 0;
$deadline = time + 60;
while (time < $deadline)
{
	$vacuumed = $node->safe_psql('postgres',
		q{SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = 'courier' AND relname = 'message'});
	last if $vacuumed > $before;
	sleep 0.1;
}
cmp_ok($vacuumed, '>', $before, "courier's vacuum worker vacuumed the message table on the promoted node");
note sprintf('vacuum_count %d -> %d, %.1f s after the promotion began', $before, $vacuumed, time - $t_promote);

$node->stop;
done_testing();
