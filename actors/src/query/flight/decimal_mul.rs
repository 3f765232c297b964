//! Exact decimal products without a checked multiply per row.
//!
//! DataFusion multiplies two `Decimal128` columns with arrow's checked
//! kernel: an overflow-checked 128-bit multiply per row, which dominates a
//! `sum(price * quantity)` over a table. K2's prices and quantities are
//! `decimal(18, 8)`, whose products cannot overflow 128 bits, so a plan's
//! `a * b` over two such columns is rewritten to [`ExactDecimalMul`]: the
//! same type and name, multiplied without the check where every value of
//! both inputs fits 64 bits (then `|a * b| < 2^126`), and by arrow's checked
//! kernel otherwise. The result is the same in every case, to the unit.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Decimal128Array};
use arrow::compute::kernels::arity::binary;
use arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ExprSchema, Result, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The highest precision whose products are rewritten: two inputs of at
/// most this many digits make a product of at most 38, which `Decimal128`
/// holds, so the result type is the one DataFusion gives.
const MAX_INPUT_PRECISION: u8 = 18;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ExactDecimalMul {
    signature: Signature,
}

impl ExactDecimalMul {
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self { signature: Signature::any(2, Volatility::Immutable) }))
    }
}

/// DataFusion's type for `a * b` of two decimals: precision `p1 + p2 + 1`
/// (at most 38), scale `s1 + s2`.
fn product_type(l: &DataType, r: &DataType) -> Option<DataType> {
    match (l, r) {
        (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2))
            if *p1 <= MAX_INPUT_PRECISION && *p2 <= MAX_INPUT_PRECISION && *s1 >= 0 && *s2 >= 0 =>
        {
            Some(DataType::Decimal128((p1 + p2 + 1).min(38), s1 + s2))
        }
        _ => None,
    }
}

impl ScalarUDFImpl for ExactDecimalMul {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "k2_exact_decimal_mul"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Named as the product it replaces, so the plan's columns keep their
    /// names.
    fn display_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [l, r] => Ok(format!("{l} * {r}")),
            _ => exec_err!("k2_exact_decimal_mul takes two arguments"),
        }
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [l, r] => Ok(format!("{} * {}", l.schema_name(), r.schema_name())),
            _ => exec_err!("k2_exact_decimal_mul takes two arguments"),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [l, r] => match product_type(l, r) {
                Some(t) => Ok(t),
                None => exec_err!("k2_exact_decimal_mul: {l} * {r} is not a product of two decimal(18) values"),
            },
            _ => exec_err!("k2_exact_decimal_mul takes two arguments"),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args.arg_fields.iter().map(|f| f.data_type().clone()).collect();
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(self.name(), self.return_type(&types)?, nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Decimal128(precision, scale) = *args.return_field.data_type() else {
            return exec_err!("k2_exact_decimal_mul: not a decimal result");
        };
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [l, r] = arrays.as_slice() else { return exec_err!("k2_exact_decimal_mul takes two arguments") };
        let (Some(a), Some(b)) = (l.as_primitive_opt::<Decimal128Type>(), r.as_primitive_opt::<Decimal128Type>())
        else {
            return exec_err!("k2_exact_decimal_mul: {} * {}", l.data_type(), r.data_type());
        };
        // Null slots hold any value: they are looked at too, which can only
        // send a batch to the checked kernel.
        let fits = |x: &Decimal128Array| x.values().iter().all(|v| i128::from(*v as i64) == *v);
        let product: Decimal128Array = if fits(a) && fits(b) {
            binary(a, b, |x, y| x.wrapping_mul(y))?
        } else {
            let checked = arrow::compute::kernels::numeric::mul(a, b)?;
            checked.as_primitive::<Decimal128Type>().clone()
        };
        Ok(ColumnarValue::Array(Arc::new(product.with_precision_and_scale(precision, scale)?)))
    }
}

/// `plan` with every product of two `decimal(p <= 18)` values computed by
/// [`ExactDecimalMul`] (in the nodes that read one input: projections,
/// filters, aggregates, sorts, windows).
pub fn exact_products(plan: LogicalPlan) -> Result<LogicalPlan> {
    let udf = ExactDecimalMul::udf();
    plan.transform_up_with_subqueries(|node| {
        let [input] = node.inputs()[..] else { return Ok(Transformed::no(node)) };
        let schema: Arc<DFSchema> = Arc::clone(input.schema());
        node.map_expressions(|e| e.transform_up(|e| rewrite(e, &schema, &udf)))
    })
    .map(|t| t.data)
}

fn rewrite(e: Expr, schema: &DFSchema, udf: &Arc<ScalarUDF>) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Multiply, right }) = &e else {
        return Ok(Transformed::no(e));
    };
    let types = (left.get_type(schema as &dyn ExprSchema), right.get_type(schema as &dyn ExprSchema));
    let (Ok(l), Ok(r)) = types else { return Ok(Transformed::no(e)) };
    if product_type(&l, &r).is_none() {
        return Ok(Transformed::no(e));
    }
    let args = vec![left.as_ref().clone(), right.as_ref().clone()];
    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(udf), args))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    fn decimals(values: &[Option<i128>]) -> Decimal128Array {
        Decimal128Array::from(values.to_vec()).with_precision_and_scale(18, 8).unwrap()
    }

    fn call(a: Decimal128Array, b: Decimal128Array) -> Result<Decimal128Array> {
        let n = a.len();
        let field: FieldRef = Arc::new(Field::new("a", a.data_type().clone(), true));
        let fields = vec![Arc::clone(&field), field];
        let args = ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::new(a)), ColumnarValue::Array(Arc::new(b))],
            arg_fields: fields,
            number_rows: n,
            return_field: Arc::new(Field::new("p", DataType::Decimal128(37, 16), true)),
            config_options: Arc::default(),
        };
        let out = ExactDecimalMul { signature: Signature::any(2, Volatility::Immutable) }.invoke_with_args(args)?;
        let ColumnarValue::Array(array) = out else { panic!("a scalar") };
        Ok(array.as_primitive::<Decimal128Type>().clone())
    }

    fn checked(
        a: &Decimal128Array,
        b: &Decimal128Array,
    ) -> std::result::Result<Decimal128Array, arrow::error::ArrowError> {
        Ok(arrow::compute::kernels::numeric::mul(a, b)?.as_primitive::<Decimal128Type>().clone())
    }

    #[test]
    fn products_are_arrows_to_the_unit_fast_or_not() {
        let big = 999_999_999_999_999_999; // 18 nines: the largest decimal(18, 8)
        let a = decimals(&[Some(big), Some(-big), None, Some(0), Some(123_456_789), Some(1)]);
        let b = decimals(&[Some(big), Some(big), Some(5), None, Some(-987_654_321), Some(-1)]);
        let fast = call(a.clone(), b.clone()).unwrap();
        assert_eq!(fast, checked(&a, &b).unwrap().with_precision_and_scale(37, 16).unwrap());
        assert_eq!(fast.data_type(), &DataType::Decimal128(37, 16));
        // Values past 64 bits (outside the declared precision) go to the
        // checked kernel: the same product, or its overflow error.
        let wide = decimals(&[Some(1 << 70), Some(3)]);
        let small = decimals(&[Some(1 << 20), Some(-7)]);
        assert_eq!(call(wide.clone(), small.clone()).unwrap().values(), checked(&wide, &small).unwrap().values());
        let huge = decimals(&[Some(1 << 100)]);
        assert!(call(huge.clone(), huge.clone()).is_err(), "an overflow is refused, never wrapped");
        assert!(checked(&huge, &huge).is_err());
    }

    #[tokio::test]
    async fn a_plans_products_are_rewritten_and_answer_the_same_under_the_same_names() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(18, 8), false),
            Field::new("quantity", DataType::Decimal128(18, 8), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["A", "B", "A", "B"])),
                Arc::new(decimals(&[Some(150_000_000), Some(-250_000_000), Some(999_999_999_999_999_999), Some(1)])),
                Arc::new(decimals(&[Some(200_000_000), None, Some(999_999_999_999_999_999), Some(3)])),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        let sql = "SELECT symbol, sum(price * quantity) AS n, max(price * quantity), price * 2 FROM t \
                   GROUP BY symbol, price ORDER BY symbol, price";
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        let rewritten = exact_products(plan.clone()).unwrap();
        assert!(
            rewritten.display_indent().to_string().contains("k2_exact_decimal_mul"),
            "{}",
            rewritten.display_indent()
        );
        let run = |p: LogicalPlan| {
            let ctx = ctx.clone();
            async move { datafusion::prelude::DataFrame::new(ctx.state(), p).collect().await.unwrap() }
        };
        let (before, after) = (run(plan).await, run(rewritten).await);
        assert_eq!(before, after, "the same rows, types and column names");
    }
}
