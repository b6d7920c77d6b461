#pragma once

// outputs.kafka's sending: a batch as one Kafka message per record, said delivered only from
// librdkafka's delivery reports.
//
// The output's max_in_flight instances share one producer (one idempotence session, one poller
// thread for reports and statistics). The engine hands their batches off in queue order
// (Descriptor::hands_off_in_order): a send queues every message of its batch in librdkafka, hands
// off, and then awaits the reports while the next batch is queued behind it. librdkafka keeps each
// partition's messages in that order, so with max_in_flight > 1 Kafka still gets the records in
// queue order; only a batch that is retried is overtaken.
//
//   message     the record's payload as stored (JSON as it came, text, bytes), to the topic
//               (its {input} replaced by the record's input), with the key from key_field when
//               set (a JSON string as its text, another JSON value serialized; none when the
//               record is not JSON or has no such field: librdkafka's partitioner then picks)
//   headers     idempotency-key: the batch's key; tank-record: "<batch key>#<index>", unique per
//               record and the same in every attempt, so a consumer drops duplicates exactly;
//               tank-input: the record's input
//
// Outcome of send(), once every message has a delivery report (or the wait is over):
//   delivered   every message was acknowledged (acks = all)
//   delivered + rejected_records   Kafka refused some for good (message too large, topic
//               authorization failed, invalid topic or record): they are dead-lettered with
//               reason upstream_rejected and Kafka's error text; the others were acknowledged.
//               (After a broker refused a topic as unauthorized, librdkafka refuses it itself for
//               a while: such local refusals are retried until they have lasted delivery_timeout.)
//   retry       any other error or a report that did not come within delivery_timeout (plus
//               librdkafka's reconnect backoff): the whole batch goes again under the same keys;
//               what Kafka already has is then there twice, with the same tank-record header
//   A fatal producer error (e.g. an idempotence sequence that cannot be repaired) makes a new
//   producer; every batch waiting on the old one is retried with it.
//
// librdkafka's queue holds at most the batches in flight (kafka_properties.hpp): tank's queue is
// the buffer.

#include <memory>

#include "kafka_properties.hpp"
#include "plugin/output.hpp"

namespace tank::plugins::kafka {

// Throws plugin::StartError when librdkafka refuses a property (the message names it).
std::unique_ptr<plugin::Output> make_kafka_output(const KafkaSettings& settings, const plugin::OutputContext& context);

}  // namespace tank::plugins::kafka
