# ALTER EXTENSION courier UPDATE against transactions that hold courier's relations: the update
# takes its ACCESS EXCLUSIVE locks up front, never holding one while waiting long for another, so
# it cannot deadlock with a nack (which locks courier.message, then courier.queue) or a reader of
# a view (the view, then the tables under it). Each case holds one relation in a transaction,
# starts the update, then touches a relation the update's script takes earlier in its own
# order; with the locks taken as the statements came (before this was fixed) both cases end in
# "deadlock detected". A lock_timeout set by the caller bounds the update's tries.
use strict;
use warnings FATAL => 'all';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $from = '0.1.0';

my $node = PostgreSQL::Test::Cluster->new('update_locks');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'courier'
# Short, so a deadlock is found (and the test fails) within the time each case waits.
deadlock_timeout = 200ms
});
$node->start;
my $to = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = 'courier'");
isnt($to, $from, "the current version ($to) is an update from $from");

# A database at the old version with a queue and a message.
sub old_database
{
	my $db = shift;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, qq{
		CREATE EXTENSION courier VERSION '$from';
		SELECT courier.create_queue('q');
		SELECT courier.enqueue('q', '{"n": 1}');
	});
}

sub extversion
{
	my $db = shift;
	return $node->safe_psql($db, "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'courier'");
}

# Starts the update in a background session; returns the session once the update is trying to get
# its locks (waiting for one, or sleeping between two tries).
sub start_update
{
	my $db = shift;
	my $u = $node->background_psql($db, on_error_stop => 0);
	$u->query_safe("SET application_name = 'courier_update'");
	$u->query_until(qr/started/, "\\echo started\nALTER EXTENSION courier UPDATE;\n\\echo updated\n");
	$node->poll_query_until($db, q{
		SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_activity
		               WHERE application_name = 'courier_update' AND state = 'active'
		                 AND wait_event_type IN ('Lock', 'Timeout'))})
	  or die 'the update never waited for a lock';
	return $u;
}

# One case: `first` in an open transaction, the update started, `second` in the same
# transaction; the transaction stays open past several deadlock_timeouts, then commits.
sub case
{
	my ($db, $name, $first, $second) = @_;
	old_database($db);
	my $log_offset = -s $node->logfile;
	my $holder = $node->background_psql($db, on_error_stop => 0);
	$holder->query_safe("BEGIN");
	$holder->query_safe($first);
	my $update = start_update($db);
	my $t0 = time;
	$holder->query($second);
	my $second_ms = int((time - $t0) * 1000);
	sleep 1;    # five deadlock_timeouts with the update trying meanwhile
	$holder->query('COMMIT');
	is($holder->{stderr}, '', "$name: the transaction holding courier's relations ran without an error");
	cmp_ok($second_ms, '<', 1000, "$name: its second statement waited $second_ms ms behind the update (< 1 s)");
	ok(pump_until($update->{run}, IPC::Run::timeout(30), \$update->{stdout}, qr/updated/),
	"$name: the update finished once the transaction committed");
	is($update->{stderr}, '', "$name: the update ran without an error");
	is(extversion($db), $to, "$name: the database is at $to");
	unlike(slurp_file($node->logfile, $log_offset), qr/deadlock detected/, "$name: no deadlock in the server log");
	$holder->quit;
	$update->quit;
}

# A nack locks courier.message (its receipts), then courier.queue (the retry policy).
case('nack_order', 'message, then queue',
	'SELECT count(*) FROM courier.message', 'SELECT count(*) FROM courier.queue');
# A monitoring transaction reads a table, then a view over it (the view is locked first).
case('view_order', 'queue, then the queue_stats view',
	'SELECT count(*) FROM courier.queue', 'SELECT count(*) FROM courier.queue_stats');

# The caller's lock_timeout bounds the tries: past it the update fails with 55P03, changes nothing,
# and succeeds when run again once the relation is free.
old_database('bounded');
my $holder = $node->background_psql('bounded', on_error_stop => 0);
$holder->query_safe('BEGIN');
$holder->query_safe('SELECT count(*) FROM courier.message');
my $u = $node->background_psql('bounded', on_error_stop => 0);
$u->query_safe("SET lock_timeout = '300ms'");
$u->query_safe('\\set VERBOSITY verbose');
my $t0 = time;
$u->query('ALTER EXTENSION courier UPDATE');
my $failed_after = time - $t0;
like($u->{stderr}, qr/ERROR:  55P03: could not lock courier's tables for the update within lock_timeout/,
	'lock_timeout: the update gives up with SQLSTATE 55P03 and its own message');
cmp_ok($failed_after, '<', 3, sprintf('lock_timeout: it gave up after %.2f s (300 ms asked)', $failed_after));
is(extversion('bounded'), $from, "lock_timeout: the database is still at $from");
$holder->query_safe('COMMIT');
$u->{stderr} = '';
$u->query('ALTER EXTENSION courier UPDATE');
is($u->{stderr}, '', 'lock_timeout: run again with the relation free, the update succeeds');
is(extversion('bounded'), $to, "lock_timeout: the database is at $to");
$holder->quit;
$u->quit;

$node->stop;
done_testing();
