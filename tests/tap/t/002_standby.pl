# courier on a hot standby: every call that would change a queue fails at once with SQLSTATE
# 25006 and says the server is a standby (a lease with a wait included: it must not sleep out its
# wait on a server where nothing can wake it); stats, queue_stats, dead_letters and the other
# views answer read-only, with what the primary has.
use strict;
use warnings FATAL => 'all';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'courier'");
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION courier;
	SELECT courier.create_queue('s');
	SELECT courier.create_queue('s_empty');
	SELECT courier.create_queue('s_dead', max_attempts => 1);
	CREATE ROLE app LOGIN;
	GRANT USAGE ON SCHEMA courier TO app;
	SELECT courier.grant('s', 'consume', 'app');
	SELECT courier.enqueue_batch('s', ARRAY['1','2','3','4']::jsonb[]);
	SELECT courier.enqueue('s_dead', '"doomed"');
	SELECT courier.nack(receipt, dead => true, error => 'poison') FROM courier.lease('s_dead');
});
# One message in flight, with a receipt to try on the standby.
my $receipt = $primary->safe_psql('postgres',
	"SELECT receipt FROM courier.lease('s', visibility_timeout => '1 hour')");
like($receipt, qr/^[0-9a-f-]{36}$/, 'a lease on the primary returned a receipt');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

# Every call that changes a queue, as a client would write it.
my @refused = (
	[ 'enqueue',        q{SELECT courier.enqueue('s', '"x"')} ],
	[ 'enqueue_unique', q{SELECT * FROM courier.enqueue_unique('s', '"x"', 'k1')} ],
	[ 'enqueue_batch',  q{SELECT * FROM courier.enqueue_batch('s', ARRAY['1']::jsonb[])} ],
	[ 'lease',          q{SELECT * FROM courier.lease('s')} ],
	[ 'lease on an empty queue', q{SELECT * FROM courier.lease('s_empty')} ],
	[ 'ack',            qq{SELECT courier.ack('$receipt')} ],
	[ 'strict ack',     qq{SELECT courier.ack('$receipt', strict => true)} ],
	[ 'ack_batch',      qq{SELECT courier.ack_batch(ARRAY['$receipt']::uuid[])} ],
	[ 'nack',           qq{SELECT courier.nack('$receipt')} ],
	[ 'nack_batch',     qq{SELECT courier.nack_batch(ARRAY['$receipt']::uuid[])} ],
	[ 'extend',         qq{SELECT courier.extend('$receipt', '1 minute')} ],
	[ 'redrive',        q{SELECT courier.redrive('s_dead')} ],
	[ 'create_queue',   q{SELECT courier.create_queue('s_new')} ],
	[ 'alter_queue',    q{SELECT courier.alter_queue('s', max_attempts => 3)} ],
	[ 'purge_queue',    q{SELECT courier.purge_queue('s')} ],
	[ 'drop_queue',     q{SELECT courier.drop_queue('s')} ],
	[ 'grant',          q{SELECT courier.grant('s', 'enqueue', 'app')} ],
	[ 'revoke',         q{SELECT courier.revoke('s', 'consume', 'app')} ],
	[ 'stats_reset',    q{SELECT courier.stats_reset('s')} ],
	[ 'maintain',       q{SELECT * FROM courier.maintain()} ],
);

# Runs `sql` on the standby with verbose errors; returns (exit code, stderr, seconds).
sub on_standby
{
	my ($sql, $user) = @_;
	my ($out, $err);
	my $t0 = time;
	my $rc = $standby->psql('postgres', $sql,
		stdout => \$out, stderr => \$err,
		extra_params => [ '-v', 'VERBOSITY=verbose', defined $user ? ('-U', $user) : () ]);
	return ($rc, $err, time - $t0);
}

for my $case (@refused)
{
	my ($name, $sql) = @$case;
	my ($rc, $err) = on_standby($sql);
	isnt($rc, 0, "$name fails on the standby");
	like($err, qr/ERROR:  25006: courier cannot change a queue on a standby server: this server is in recovery/,
		"$name: SQLSTATE 25006 and a message that names the standby");
}

# The detail and hint say what to do; a role without superuser gets the same answer.
my (undef, $err) = on_standby(q{SELECT * FROM courier.lease('s')}, 'app');
like($err, qr/25006/, 'an ordinary role gets 25006 too');
like($err, qr/HINT:  Connect to the primary/, 'the hint says to connect to the primary');

# A waiting lease fails at once, not after its wait (on an empty queue and on one with messages).
for my $q ('s_empty', 's')
{
	my ($rc, $err, $secs) = on_standby(qq{SELECT * FROM courier.lease('$q', wait => '20 seconds')});
	like($err, qr/25006/, "a waiting lease on $q fails with 25006");
	cmp_ok($secs, '<', 5, "a waiting lease on $q fails at once, not after its 20 s wait");
	note sprintf('waiting lease on %s refused after %.3f s', $q, $secs);
}
# Inside an explicit transaction block too, and the session stays usable afterwards.
my ($rc_tx, $err_tx) = on_standby(q{BEGIN; SELECT courier.enqueue('s', '1'); COMMIT;});
like($err_tx, qr/25006/, 'refused inside a transaction block');

# Read-only calls answer as on the primary.
my $stats_sql = q{SELECT ready, in_flight, dead FROM courier.stats('s')};
is($standby->safe_psql('postgres', $stats_sql), $primary->safe_psql('postgres', $stats_sql),
	'stats(): the same gauges as the primary');
is($standby->safe_psql('postgres', $stats_sql), '3|1|0', 'stats(): 3 ready, 1 in flight');
is($standby->safe_psql('postgres', q{SELECT queue, ready, in_flight, dead FROM courier.queue_stats ORDER BY queue}),
	"s|3|1|0\ns_dead|0|0|1\ns_empty|0|0|0", 'the queue_stats view');
is($standby->safe_psql('postgres', q{SELECT queue, attempts, last_error, payload FROM courier.dead_letters}),
	's_dead|1|poison|"doomed"', 'the dead_letters view');
is($standby->safe_psql('postgres', q{SELECT string_agg(queue, ',' ORDER BY queue) FROM courier.queues}),
	's,s_dead,s_empty', 'the queues view');
is($standby->safe_psql('postgres', q{SELECT queue, grantee::text, privilege FROM courier.queue_privileges}),
	's|app|consume', 'the queue_privileges view');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM courier.queue_groups}), '0', 'the queue_groups view');
is($standby->safe_psql('postgres', q{SELECT courier.has_queue_privilege('s', 'consume')}), 't',
	'has_queue_privilege');
is($standby->safe_psql('postgres', q{SELECT courier.version() = extversion FROM pg_extension WHERE extname = 'courier'}),
	't', 'version()');
# The counters are this node's own: nothing ran here, so nothing was counted.
is($standby->safe_psql('postgres', q{SELECT coalesce(enqueued_total, 0), coalesce(leased_total, 0) FROM courier.stats('s')}),
	'0|0', "the standby's counters count only what ran on it");

# Nothing changed on the primary, and it still works.
is($primary->safe_psql('postgres', $stats_sql), '3|1|0', 'the primary is as it was');
is($primary->safe_psql('postgres', qq{SELECT courier.ack('$receipt')}), 't', 'the receipt still acks on the primary');

$standby->stop;
$primary->stop;
done_testing();
