//! The MongoDB query language, as pure functions over BSON.
//!
//! Everything here is independent of the server: comparison in the server's total order across
//! types, filter matching, update operators, projections, sort specifications, aggregation
//! stages and expressions, and the `updateDescription` of change events. The engine calls these
//! with documents it stores as raw BSON; nothing here performs I/O or holds server state.

use std::fmt;

#[allow(dead_code)]
pub mod compare;
pub mod diff;
pub mod expr;
pub mod filter;
pub mod keystring;
#[allow(dead_code)]
pub mod path;
pub mod pipeline;
pub mod projection;
pub mod sort;
pub mod update;

// Shared internals; some helpers are only used by parts of the API that land in later commits.
#[allow(dead_code)]
mod numeric;
#[allow(dead_code)]
mod value;

/// Sort or index-key direction of one field (`1` or `-1` in a sort or key pattern).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `1`: smallest first.
    Ascending,
    /// `-1`: largest first.
    Descending,
}

impl Direction {
    /// Applies this direction to an ascending comparison result.
    pub fn apply(self, ordering: std::cmp::Ordering) -> std::cmp::Ordering {
        match self {
            Direction::Ascending => ordering,
            Direction::Descending => ordering.reverse(),
        }
    }
}

/// A query-language error, carrying the server error code a real `mongod` would answer with.
///
/// The engine turns it into an `{ok: 0, code, codeName, errmsg}` reply unchanged, so the code
/// and name must be the ones the real server uses for the same input (for example 2 `BadValue`
/// for an unknown operator, 9 `FailedToParse`, 40324 for an unrecognized pipeline stage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// The numeric server error code (`code` in the reply).
    pub code: i32,
    /// The server's name for the code (`codeName` in the reply).
    pub code_name: &'static str,
    /// The human-readable message (`errmsg` in the reply).
    pub message: String,
}

impl QueryError {
    /// Builds an error with the given code, code name and message.
    pub fn new(code: i32, code_name: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            code_name,
            message: message.into(),
        }
    }

    /// Error 2 `BadValue`, the server's answer to most malformed arguments.
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(2, "BadValue", message)
    }

    /// Error 9 `FailedToParse`.
    pub fn failed_to_parse(message: impl Into<String>) -> Self {
        Self::new(9, "FailedToParse", message)
    }

    /// Error 14 `TypeMismatch`.
    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::new(14, "TypeMismatch", message)
    }

    /// Error 40 `ConflictingUpdateOperators`.
    pub fn conflicting_update(message: impl Into<String>) -> Self {
        Self::new(40, "ConflictingUpdateOperators", message)
    }

    /// Error 66 `ImmutableField`.
    pub fn immutable_field(message: impl Into<String>) -> Self {
        Self::new(66, "ImmutableField", message)
    }

    /// Error 168 `InvalidPipelineOperator` (unknown aggregation expression operator).
    pub fn invalid_pipeline_operator(message: impl Into<String>) -> Self {
        Self::new(168, "InvalidPipelineOperator", message)
    }

    /// A numbered assertion of mongod (`uassert(<code>, ...)`), whose `codeName` is
    /// `Location<code>`.
    pub fn location(code: i32, message: impl Into<String>) -> Self {
        Self::new(code, location_name(code), message)
    }

    /// Placeholder error for a part of the query language this module does not implement
    /// (yet); error 2 `BadValue` with a message naming the part.
    pub fn not_implemented(what: &str) -> Self {
        Self::bad_value(format!("{what} is not implemented by the testkit"))
    }
}

/// The `codeName` the server reports for a numbered assertion (`Location<code>`).
///
/// mongod's `uassert` with a bare number produces `codeName: "Location<N>"`; the string is
/// interned here for the codes this module uses so `QueryError::code_name` stays `&'static str`.
fn location_name(code: i32) -> &'static str {
    macro_rules! names {
        ($($n:literal),* $(,)?) => {
            match code {
                $($n => concat!("Location", stringify!($n)),)*
                _ => "UnknownError",
            }
        };
    }
    // Only the numbered assertions this module raises; extend together with their use.
    names!(
        15981, 15982, 15983, 15998, 16020, 16410, 16411, 16412, 16436, 16554, 16555, 16608, 16609,
        16610, 16611, 16612, 16702, 16866, 16867, 16868, 16869, 16870, 16871, 16872, 16873, 16874,
        16875, 16876, 16877, 16878, 16879, 16880, 16881, 16883, 16884, 16885, 17276, 28667, 28724,
        28745, 28746, 28749, 28750, 28751, 28752, 28753, 28754, 28756, 28761, 28762, 28763, 28764,
        28765, 28766, 28769, 28784, 28785, 28786, 28787, 28788, 28798, 28809, 28810, 28811, 28812,
        28813, 28822, 31002, 31119, 31253, 31254, 31308, 31325, 31395, 34435, 34443, 34444, 34445,
        34446, 34447, 34448, 34449, 34460, 34461, 34462, 34463, 34464, 34470, 34471, 34472, 40010,
        40016, 40018, 40026, 40031, 40058, 40060, 40066, 40069, 40090, 40156, 40157, 40158, 40160,
        40166, 40167, 40168, 40169, 40170, 40171, 40172, 40173, 40174, 40177, 40178, 40179, 40180,
        40181, 40182, 40185, 40186, 40187, 40228, 40231, 40232, 40233, 40234, 40235, 40236, 40237,
        40238, 40239, 40240, 40241, 40272, 40273, 40274, 40275, 40276, 40277, 40321, 40322, 40323,
        40324, 40325, 40352, 40353, 40383, 40385, 40386, 40387, 40390, 40391, 40392, 40393, 40394,
        40395, 40396, 40397, 40398, 40399, 40400, 40401, 40402, 40403, 40404, 40405, 40406, 40407,
        40408, 40409, 40410, 40411, 40412, 40413, 40414, 40415, 40416, 40417, 40418, 40419, 40420,
        40421, 40422, 40423, 40424, 40425, 40426, 40427, 40428, 40429, 40430, 40431, 40432, 40433,
        40434, 40435, 40436, 40437, 40438, 40439, 40440, 40441, 40442, 40443, 40444, 40445, 40446,
        40447, 40448, 40449, 40450, 40451, 40452, 40453, 40454, 40455, 40456, 40457, 40458, 40459,
        40460, 40461, 40462, 40463, 40464, 40465, 40466, 40467, 40468, 40469, 40470, 40471, 40472,
        40473, 40474, 40475, 40476, 40477, 40478, 40479, 40480, 40481, 40482, 40483, 40484, 40485,
        40486, 40487, 40488, 40489, 40490, 40491, 40492, 40493, 40494, 40495, 40496, 40497, 40498,
        40499, 40500, 40515, 40517, 40522, 40533, 40535, 40600, 40601, 40602, 40603, 51024, 51025,
        51026, 51027, 51028, 51045, 51046, 51047, 51048, 51049, 51050, 51051, 51052, 51053, 51054,
        51055, 51056, 51057, 51058, 51059, 51060, 51061, 51062, 51063, 51064, 51065, 51066, 51067,
        51068, 51069, 51070, 51071, 51072, 51073, 51074, 51075, 51076, 51077, 51078, 51079, 51080,
        51081, 51082, 51083, 51084, 51085, 51086, 51087, 51088, 51089, 51090, 51091, 51092, 51093,
        51094, 51095, 51096, 51097, 51098, 51099, 51100, 51101, 51102, 51103, 51104, 51105, 51106,
        51107, 51108, 51109, 51110, 51111, 51112, 51113, 51114, 51115, 51116, 51117, 51118, 51119,
        51120, 51121, 51122, 51123, 51124, 51125, 51126, 51127, 51128, 51129, 51130, 51131, 51132,
        51133, 51134, 51135, 51136, 51137, 51138, 51139, 51140, 51141, 51142, 51143, 51144, 51145,
        51146, 51147, 51148, 51149, 51150, 51151, 51152, 51153, 51154, 51155, 51156, 51157, 51158,
        51159, 51160, 51161, 51162, 51163, 51164, 51165, 51166, 51167, 51168, 51169, 51170, 51171,
        51172, 51173, 51174, 51175, 51176, 51177, 51178, 51179, 51180, 51181, 51182, 51183, 51184,
        51185, 51186, 51187, 51188, 51189, 51190, 51191, 51192, 51193, 51194, 51195, 51196, 51197,
        51198, 51199, 51200, 51246, 51247, 51270, 51271, 51272, 51273, 51274, 51275, 51276, 51277,
        51278, 51279, 5173601, 5173602, 5173603, 5173604, 5173605, 5173606, 5173607, 5173608,
        5173609, 4822800, 4822801, 4822802, 4822803, 4822804, 4822805, 4822806, 4822807, 4822808,
        4822809, 4822810, 4822811, 4822812, 4822813, 4822814, 4822815, 4822816, 4822817, 4822818,
        4822819, 4822820, 4822821, 4822822, 4822823, 4822824, 4822825, 4822826,
    )
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code_name, self.code, self.message)
    }
}

impl std::error::Error for QueryError {}
