SELECT courier.enqueue('bench', '@PAYLOAD@');
