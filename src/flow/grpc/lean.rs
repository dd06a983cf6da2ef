//! `jina.DataRequestProto` as the gateway reads and writes it: the header,
//! parameters and routes as prost's messages, the documents (`data`, a
//! `DataContentProto`) read straight into the columnar [`Body`] while the
//! request is decoded, and written from bytes built straight from the answer's
//! body (convert.rs, the fast paths). build.rs generates the data services
//! over this type (`super::lean_pb`); on the wire it is the same message, so
//! clients use the generated `DataRequestProto` or this, as they like.
//!
//! Measured on 100-document requests, building and dropping the `DocProto`
//! maps was most of the gRPC side's cost (docs/benchmarks.md).

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::Message as _;
use prost::encoding::{self, DecodeContext, WireType};

use super::convert;
use super::pb::docarray::DocListProto;
use super::pb::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use super::pb::jina::{HeaderProto, RouteProto};
use crate::wire::Body;

/// A `DataRequestProto` with its documents as bytes and a body.
#[derive(Debug, Default)]
pub struct DataRequest {
    pub header: Option<HeaderProto>,
    pub parameters: Option<prost_types::Struct>,
    pub routes: Vec<RouteProto>,
    /// The `data` field (an encoded `DataContentProto`), to send, or as
    /// received when it came once; `None`: absent.
    pub data: Option<Bytes>,
    /// What a received `data` holds ([`DataRequest::take_docs`]).
    docs: Received,
    /// Documents in the `data` fields received, at every level
    /// ([`convert::count_docs`]).
    counted: usize,
}

/// A received `data` field's documents.
#[derive(Debug, Default)]
enum Received {
    #[default]
    None,
    /// Flat documents, read straight into a body (boxed: a body's columns
    /// are most of the message's size).
    Body(Box<Body>),
    /// Any other, read by prost (each `data` field merged into it, as prost
    /// merges a message field sent more than once); converted when taken.
    Content(DataContentProto),
    /// Refused before prost read it: why (more than `MAX_REQUEST_DOCS`
    /// documents). Further `data` fields are skipped.
    Refused(String),
}

/// `data` of a request or answer without documents: `docs`, empty.
pub const NO_DOCS: &[u8] = &[0x0a, 0x00];

impl DataRequest {
    /// A message to send: `data` is an encoded `DataContentProto`.
    pub fn new(
        header: Option<HeaderProto>,
        parameters: Option<prost_types::Struct>,
        routes: Vec<RouteProto>,
        data: Option<Bytes>,
    ) -> DataRequest {
        DataRequest {
            header,
            parameters,
            routes,
            data,
            docs: Received::None,
            counted: 0,
        }
    }

    /// The received documents as a body, or why they cannot be one (a
    /// request answered with that reason), and the number of documents
    /// (at every level, as counted on the bytes). Taken once: the message
    /// holds none afterwards.
    pub fn take_docs(&mut self) -> (Result<Body, String>, usize) {
        let count = self.counted;
        let body = match std::mem::take(&mut self.docs) {
            Received::None => Ok(Body::default()),
            Received::Body(body) => Ok(*body),
            Received::Refused(why) => Err(why),
            Received::Content(content) => match content.documents {
                None => Ok(Body::default()),
                Some(Documents::Docs(docs)) => convert::body_from_docs(&docs),
                Some(Documents::DocsBytes(bytes)) => DocListProto::decode(bytes.as_slice())
                    .map_err(|e| format!("`docs_bytes` is not a DocListProto: {e}"))
                    .and_then(|docs| convert::body_from_docs(&docs)),
            },
        };
        (body, count)
    }

    /// Counts `data`'s documents at every level, and refuses the request
    /// (before prost decodes a byte of it) once they are more than
    /// `MAX_REQUEST_DOCS`.
    fn count(&mut self, data: &[u8]) -> Result<(), String> {
        self.counted = self.counted.saturating_add(convert::count_docs(data));
        crate::flow::gateway::check_request_docs(self.counted)
    }

    /// Reads one `data` field's bytes: flat documents (the field's first
    /// time) straight into a body, any other through prost's messages as
    /// before (`ctx` carries the decoding's recursion limit). Linear in the
    /// bytes however often the field comes.
    fn read_data(&mut self, data: Bytes, ctx: DecodeContext) -> Result<(), DecodeError> {
        let merge = |content: &mut DataContentProto, bytes: &[u8], ctx: DecodeContext| {
            let mut framed = Vec::with_capacity(bytes.len() + 10);
            encoding::encode_varint(bytes.len() as u64, &mut framed);
            framed.extend_from_slice(bytes);
            encoding::message::merge(
                WireType::LengthDelimited,
                content,
                &mut framed.as_slice(),
                ctx,
            )
        };
        let docs = std::mem::take(&mut self.docs);
        if let Received::Refused(_) = docs {
            self.docs = docs;
            return Ok(());
        }
        // Flat documents have no chunks: the fast path's count is the count.
        if let Received::None = docs
            && let Some(body) = convert::fast_body(&data)
        {
            self.counted = body.len();
            self.docs = Received::Body(Box::new(body));
            self.data = Some(data);
            return Ok(());
        }
        if let Err(why) = self.count(&data) {
            self.docs = Received::Refused(why);
            self.data = None;
            return Ok(());
        }
        match docs {
            // (Returned above; kept as it was.)
            Received::Refused(why) => self.docs = Received::Refused(why),
            Received::None => {
                let mut content = DataContentProto::default();
                merge(&mut content, &data, ctx)?;
                self.docs = Received::Content(content);
            }
            // The field again: what came first, read by prost, then this.
            Received::Body(_) => {
                let mut content = DataContentProto::default();
                let first = self.data.take().unwrap_or_default();
                merge(&mut content, &first, ctx.clone())?;
                merge(&mut content, &data, ctx)?;
                self.docs = Received::Content(content);
            }
            Received::Content(mut content) => {
                merge(&mut content, &data, ctx)?;
                self.docs = Received::Content(content);
            }
        }
        self.data = None;
        Ok(())
    }
}

impl prost::Message for DataRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(header) = &self.header {
            encoding::message::encode(1, header, buf);
        }
        if let Some(parameters) = &self.parameters {
            encoding::message::encode(2, parameters, buf);
        }
        encoding::message::encode_repeated(3, &self.routes, buf);
        if let Some(data) = &self.data {
            encoding::bytes::encode(4, data, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let named = |field: &'static str| {
            move |mut e: DecodeError| {
                e.push("DataRequestProto", field);
                e
            }
        };
        match tag {
            1 => encoding::message::merge(
                wire_type,
                self.header.get_or_insert_with(Default::default),
                buf,
                ctx,
            )
            .map_err(named("header")),
            2 => encoding::message::merge(
                wire_type,
                self.parameters.get_or_insert_with(Default::default),
                buf,
                ctx,
            )
            .map_err(named("parameters")),
            3 => encoding::message::merge_repeated(wire_type, &mut self.routes, buf, ctx)
                .map_err(named("routes")),
            4 => {
                let mut data = Bytes::new();
                encoding::bytes::merge(wire_type, &mut data, buf, ctx.clone())
                    .map_err(named("data"))?;
                self.read_data(data, ctx).map_err(named("data"))
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.header
            .as_ref()
            .map_or(0, |h| encoding::message::encoded_len(1, h))
            + self
                .parameters
                .as_ref()
                .map_or(0, |p| encoding::message::encoded_len(2, p))
            + encoding::message::encoded_len_repeated(3, &self.routes)
            + match (&self.data, &self.docs) {
                (Some(data), _) => encoding::bytes::encoded_len(4, data),
                (None, Received::Content(content)) => encoding::message::encoded_len(4, content),
                (None, _) => 0,
            }
    }

    fn clear(&mut self) {
        *self = DataRequest::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use crate::flow::grpc::pb::jina::DataRequestProto;

    fn request(docs: DocListProto) -> DataRequestProto {
        DataRequestProto {
            header: Some(HeaderProto {
                request_id: "r".into(),
                ..Default::default()
            }),
            data: Some(DataContentProto {
                documents: Some(Documents::Docs(docs)),
            }),
            ..Default::default()
        }
    }

    fn flat() -> Vec<Document> {
        (0..5)
            .map(|i| Document {
                id: format!("d{i}"),
                text: (i % 2 == 0).then(|| format!("text {i}")),
                blob: (i == 1).then(|| vec![1, 2, 3]),
                uri: (i == 2).then(|| "file://x".into()),
                mime_type: (i == 3).then(|| "text/plain".into()),
                embedding: (i != 4).then(|| vec![i as f32, -0.5, 1e-3]),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn flat_documents_take_the_fast_way_both_ways() {
        let body = Body::from_documents(&flat());
        // Written straight from the body: what prost writes from the
        // documents (map order aside).
        let fast = convert::content_from_body(&body).unwrap();
        let list = convert::docs_from_body(&body).unwrap();
        let slow = DataContentProto::decode(fast.as_slice()).unwrap();
        assert_eq!(slow.documents, Some(Documents::Docs(list.clone())));
        // Read straight into a body: the body the general way reads.
        let fast_body = convert::fast_body(&fast).expect("flat documents take the fast path");
        assert_eq!(fast_body, convert::body_from_docs(&list).unwrap());
        assert_eq!(fast_body, body);
        // And through the message, as tonic decodes it.
        let bytes = request(list).encode_to_vec();
        let mut decoded = DataRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.encoded_len(), bytes.len());
        assert_eq!(decoded.take_docs(), (Ok(body), 5));
        assert_eq!(decoded.header.as_ref().unwrap().request_id, "r");
    }

    #[test]
    fn other_documents_are_read_as_before() {
        // A tree with tags and scores: the general way, same body.
        let tree = crate::wire::body::tests::tree();
        let body = Body::from_documents(&tree);
        let list = convert::docs_from_body(&body).unwrap();
        let content = convert::content_from_body(&body).unwrap();
        assert!(convert::fast_body(&content).is_none());
        let mut decoded =
            DataRequest::decode(request(list.clone()).encode_to_vec().as_slice()).unwrap();
        let (docs, count) = decoded.take_docs();
        // Counted at every level (chunks and matches too).
        assert_eq!(count, body.len());
        // (Compared as documents: tags are JSON text written in map order.)
        assert_eq!(docs.unwrap().into_documents(), Ok(tree));
        // A bad document: the same reason as the general way gives.
        let bad = DocListProto {
            docs: vec![crate::flow::grpc::pb::docarray::DocProto {
                data: [(
                    "text".to_owned(),
                    crate::flow::grpc::pb::docarray::NodeProto {
                        content: Some(
                            crate::flow::grpc::pb::docarray::node_proto::Content::Integer(1),
                        ),
                        docarray_type: None,
                    },
                )]
                .into(),
            }],
        };
        let mut decoded = DataRequest::decode(request(bad).encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            decoded.take_docs().0,
            Err("docs[0].text must be text, not an integer".into())
        );
        // Bytes that are no DocListProto fail the decoding, as before.
        let mut broken = request(DocListProto::default()).encode_to_vec();
        broken.extend_from_slice(&[0x22, 0x03, 0x0a, 0x05, 0xff]);
        assert!(DataRequest::decode(broken.as_slice()).is_err());
        assert!(DataRequestProto::decode(broken.as_slice()).is_err());
        // `data` twice is merged, as prost merges a message field.
        let mut twice =
            request(convert::docs_from_body(&Body::from_documents(&flat()[..2])).unwrap())
                .encode_to_vec();
        twice.extend(
            request(convert::docs_from_body(&Body::from_documents(&flat()[2..])).unwrap())
                .encode_to_vec(),
        );
        let mut decoded = DataRequest::decode(twice.as_slice()).unwrap();
        assert_eq!(decoded.take_docs(), (Ok(Body::from_documents(&flat())), 5));
        // Many times: merged as it comes, in linear time (a hostile client's
        // 4 MiB of empty `data` fields).
        let mut many = Vec::new();
        for _ in 0..50_000 {
            many.extend_from_slice(&[0x22, 0x04, 0x0a, 0x02, 0x0a, 0x00]);
        }
        let mut decoded = DataRequest::decode(many.as_slice()).unwrap();
        let (docs, count) = decoded.take_docs();
        assert_eq!((docs.unwrap().len(), count), (50_000, 50_000));
    }

    #[test]
    fn nested_documents_past_the_limit_are_refused_before_prost_reads_them() {
        // A root and 100,000 empty chunks in 200 KB (hostile pass 3, H3-2:
        // a million of them took a Flow to 1.7 GiB).
        use crate::flow::grpc::pb::docarray::{DocProto, NodeProto, node_proto::Content};
        let root = |n: usize| DocProto {
            data: [(
                "chunks".to_owned(),
                NodeProto {
                    content: Some(Content::DocArray(DocListProto {
                        docs: vec![DocProto::default(); n],
                    })),
                    docarray_type: None,
                },
            )]
            .into(),
        };
        let bytes = request(DocListProto {
            docs: vec![root(100_000)],
        })
        .encode_to_vec();
        let mut decoded = DataRequest::decode(bytes.as_slice()).unwrap();
        assert!(matches!(decoded.docs, Received::Refused(_)));
        let (docs, count) = decoded.take_docs();
        assert_eq!(count, 100_001);
        assert!(
            docs.unwrap_err()
                .starts_with("the request has 100001 documents, more than the 100000")
        );
        // Within it: read, and counted at every level.
        let bytes = request(DocListProto {
            docs: vec![root(10), root(5)],
        })
        .encode_to_vec();
        let (docs, count) = DataRequest::decode(bytes.as_slice()).unwrap().take_docs();
        assert_eq!((docs.unwrap().len(), count), (17, 17));
    }
}
