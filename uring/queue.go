package uring

// Queue is a FIFO of requests linked through the requests themselves, so
// queueing never allocates. A request sits in at most one Queue at a time.
// Queue is not safe for concurrent use; guard it with the owner's lock.
type Queue struct {
	head, tail *Request
	n          int
}

// Push appends r.
func (q *Queue) Push(r *Request) {
	r.next = nil
	if q.tail == nil {
		q.head = r
	} else {
		q.tail.next = r
	}
	q.tail = r
	q.n++
}

// PushFront puts r before every queued request (resubmissions go first).
func (q *Queue) PushFront(r *Request) {
	r.next = q.head
	q.head = r
	if q.tail == nil {
		q.tail = r
	}
	q.n++
}

// Pop removes and returns the oldest request, or nil.
func (q *Queue) Pop() *Request {
	r := q.head
	if r == nil {
		return nil
	}
	q.head = r.next
	if q.head == nil {
		q.tail = nil
	}
	r.next = nil
	q.n--
	return r
}

// Len is the number of queued requests.
func (q *Queue) Len() int { return q.n }

// TakeAll moves every request of o to the end of q.
func (q *Queue) TakeAll(o *Queue) {
	if o.head == nil {
		return
	}
	if q.tail == nil {
		q.head = o.head
	} else {
		q.tail.next = o.head
	}
	q.tail = o.tail
	q.n += o.n
	*o = Queue{}
}
