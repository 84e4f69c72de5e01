SELECT count(*) FROM courier.lease('bench');
