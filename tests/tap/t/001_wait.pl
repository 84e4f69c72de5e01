# Waiting leases woken by other sessions: what the isolation tester cannot drive, because a
# waiting lease sleeps on a condition variable, not on a heavyweight lock (tests/isolation/specs/
# wait.spec covers the rest). Uses background psql sessions against a throwaway cluster.
use strict;
use warnings FATAL => 'all';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

# Runs `sql` in a background session without waiting for it; returns the session.
sub start_waiting
{
	my ($node, $sql) = @_;
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	$s->query_safe("SET application_name = 'courier_waiter'");
	$s->query_until(qr/started/, "\\echo started\n$sql;\n");
	return $s;
}

# Waits (up to `limit` seconds) until the background session has printed something matching
# `re`; returns its output and how long that took.
sub wait_output
{
	my ($s, $re, $limit) = @_;
	my $t0 = time;
	while (time - $t0 < $limit)
	{
		$s->{run}->pump_nb();
		if ($s->{stdout} =~ $re)
		{
			my $out = $s->{stdout};
			$s->{stdout} = '';
			return ($out, time - $t0);
		}
		sleep 0.005;
	}
	return ($s->{stdout}, time - $t0);
}

sub waiting_count
{
	my $node = shift;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'courier_waiter' AND wait_event_type = 'Extension'");
}

sub run_tests
{
	my ($node, $preloaded) = @_;
	my $mode = $preloaded ? 'preloaded' : 'not preloaded';
	$node->safe_psql('postgres', q{
		CREATE EXTENSION courier;
		SELECT courier.create_queue('w');
		SELECT courier.create_queue('w_other');
		SELECT courier.create_queue('w_notify', notify => true);
	});

	# A committed enqueue wakes a waiter at once; an uncommitted one does not.
	my $waiter = start_waiting($node,
		"SELECT 'got ' || payload::text FROM courier.lease('w', wait => '20 seconds')");
	my $producer = $node->background_psql('postgres');
	$producer->query_safe("BEGIN");
	$producer->query_safe("SELECT courier.enqueue('w', '\"one\"')");
	my ($out) = wait_output($waiter, qr/got/, 0.5);
	unlike($out, qr/got/, "$mode: an uncommitted enqueue does not wake the waiter");
	my $t_commit = time;
	$producer->query_safe("COMMIT");
	my ($got, $latency) = wait_output($waiter, qr/got "one"/, 10);
	like($got, qr/got "one"/, "$mode: the committed enqueue is delivered to the waiter");
	cmp_ok($latency, '<', $preloaded ? 0.5 : 1.0, "$mode: woken within a fraction of a second");
	note sprintf("%s: the waiter's result arrived %.1f ms after COMMIT returned to the producer", $mode, $latency * 1000);
	my $report = $waiter->query_safe("SELECT wakeups >= 1, event_driven FROM courier._last_wait()");
	if ($preloaded)
	{
		like($report, qr/^t\|t/m, "$mode: woken by an event, not by polling");
	}
	else
	{
		like($report, qr/\|f$/m, "$mode: polling fallback");
	}
	$waiter->quit;

	# Two waiters, one message: exactly one gets it, the other keeps waiting.
	my $w1 = start_waiting($node, "SELECT 'w1 got ' || payload::text FROM courier.lease('w', wait => '20 seconds')");
	my $w2 = start_waiting($node, "SELECT 'w2 got ' || payload::text FROM courier.lease('w', wait => '20 seconds')");
	sleep 0.3;
	$producer->query_safe("SELECT courier.enqueue('w', '\"a\"')");
	my ($o1) = wait_output($w1, qr/got/, 0.7);
	my ($o2) = wait_output($w2, qr/got/, 0.7);
	my $winners = ($o1 =~ /got "a"/ ? 1 : 0) + ($o2 =~ /got "a"/ ? 1 : 0);
	is($winners, 1, "$mode: one of two waiters gets the one message");
	is(waiting_count($node), '1', "$mode: the other is still waiting") if $preloaded;
	$producer->query_safe("SELECT courier.enqueue('w', '\"b\"')");
	my $loser = $o1 =~ /got/ ? $w2 : $w1;
	my ($ob) = wait_output($loser, qr/got "b"/, 5);
	like($ob, qr/got "b"/, "$mode: the second message goes to the waiter still waiting");
	$w1->quit;
	$w2->quit;

	# Traffic on another queue wakes nobody.
	$waiter = start_waiting($node, "SELECT count(*) FROM courier.lease('w', wait => '2 seconds')");
	sleep 0.2;
	$producer->query_safe("SELECT count(*) FROM courier.enqueue_batch('w_other', ARRAY['1','2','3']::jsonb[])")
	  for 1 .. 5;
	wait_output($waiter, qr/\d/, 5);
	is($waiter->query_safe("SELECT wakeups FROM courier._last_wait()"), '0',
		"$mode: enqueues into another queue cause no wakeups") if $preloaded;
	$waiter->quit;

	# A delayed message coming due ends the wait then, not at the deadline.
	$producer->query_safe("SELECT courier.enqueue('w', '\"later\"', delay => '1 second')");
	$waiter = start_waiting($node, "SELECT 'got ' || payload::text FROM courier.lease('w', wait => '20 seconds')");
	($out, $latency) = wait_output($waiter, qr/got "later"/, 10);
	like($out, qr/got "later"/, "$mode: a delayed message is delivered to a waiter when it comes due");
	cmp_ok($latency, '<', 2.5, "$mode: ... at its due time, not the end of the wait");
	$waiter->quit;

	# So does a lease expiring.
	$producer->query_safe("SELECT courier.enqueue('w', '\"expiring\"')");
	$producer->query_safe("SELECT count(*) FROM courier.lease('w', visibility_timeout => '1 second')");
	$waiter = start_waiting($node, "SELECT 'got ' || payload::text || ' attempt ' || attempt FROM courier.lease('w', wait => '20 seconds')");
	($out, $latency) = wait_output($waiter, qr/got "expiring" attempt 2/, 10);
	like($out, qr/attempt 2/, "$mode: a message whose lease expired is delivered to a waiter");
	cmp_ok($latency, '<', 2.5, "$mode: ... when the lease expires");
	$waiter->quit;

	# A nack releases the message to a waiter at once.
	$producer->query_safe("SELECT courier.enqueue('w', '\"nacked\"')");
	my $receipt = $producer->query_safe("SELECT receipt FROM courier.lease('w', visibility_timeout => '1 hour')");
	$waiter = start_waiting($node, "SELECT 'got ' || payload::text FROM courier.lease('w', wait => '20 seconds')");
	sleep 0.3;
	$producer->query_safe("SELECT courier.nack('$receipt', retry_in => '0')");
	($out, $latency) = wait_output($waiter, qr/got "nacked"/, 10);
	like($out, qr/got "nacked"/, "$mode: a nack wakes a waiter");
	cmp_ok($latency, '<', 1.0, "$mode: ... at once");
	$waiter->quit;

	# pg_cancel_backend and pg_terminate_backend end a wait promptly.
	$waiter = start_waiting($node, "SELECT count(*) FROM courier.lease('w', wait => '20 seconds')");
	sleep 0.3;
	my $t0 = time;
	$producer->query_safe("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'courier_waiter'");
	$waiter->{run}->pump_nb() until $waiter->{stderr} =~ /canceling statement/ || time - $t0 > 5;
	like($waiter->{stderr}, qr/canceling statement due to user request/, "$mode: pg_cancel_backend ends a wait");
	cmp_ok(time - $t0, '<', 1, "$mode: ... promptly");
	$waiter->{stderr} = '';
	is($waiter->query_safe("SELECT 1"), '1', "$mode: the session is usable after a cancelled wait");
	$waiter->query_until(qr/started/, "\\echo started\nSELECT count(*) FROM courier.lease('w', wait => '20 seconds');\n");
	sleep 0.3;
	$producer->query_safe("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'courier_waiter'");
	$t0 = time;
	sleep 0.05 while waiting_count($node) ne '0' && time - $t0 < 5;
	is(waiting_count($node), '0', "$mode: pg_terminate_backend ends a wait");
	$waiter->{run}->kill_kill;

	# The claims are released however waits end: a new waiter still gets woken.
	$waiter = start_waiting($node, "SELECT 'got ' || payload::text FROM courier.lease('w', wait => '20 seconds')");
	sleep 0.3;
	$producer->query_safe("SELECT courier.enqueue('w', '\"after cancels\"')");
	($out, $latency) = wait_output($waiter, qr/got "after cancels"/, 5);
	cmp_ok($latency, '<', $preloaded ? 0.5 : 1.0, "$mode: waiting still works after cancelled and terminated waits");
	$waiter->quit;

	# NOTIFY hint: one notification per committing transaction, only for queues that ask.
	my $listener = $node->background_psql('postgres');
	$listener->query_safe("LISTEN courier");
	$producer->query_safe("BEGIN");
	$producer->query_safe("SELECT courier.enqueue('w_notify', to_jsonb(i)) FROM generate_series(1, 3) i");
	$producer->query_safe("SELECT courier.enqueue('w', '\"quiet\"')");
	$producer->query_safe("COMMIT");
	$producer->query_safe("BEGIN");
	$producer->query_safe("SELECT courier.enqueue('w_notify', '\"rolled back\"')");
	$producer->query_safe("ROLLBACK");
	sleep 0.3;
	my $notes = $listener->query("SELECT 1");
	my @received = ($notes =~ /Asynchronous notification "courier" with payload "([^"]*)"/g);
	is_deeply(\@received, ['w_notify'], "$mode: one NOTIFY courier 'w_notify' for a transaction with three enqueues; none for others or rollbacks");
	$listener->quit;
	$producer->quit;

	$node->safe_psql('postgres', 'DROP EXTENSION courier');
}

my $node = PostgreSQL::Test::Cluster->new('preloaded');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'courier'");
$node->start;
run_tests($node, 1);
$node->stop;

my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
run_tests($plain, 0);
$plain->stop;

done_testing();
